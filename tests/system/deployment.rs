//! `docker-compose.yml` against the repository (there is no Docker engine to run it here): every
//! file it mounts exists, every service publishes the port it listens on, Prometheus scrapes
//! compose services on the ports they listen on, Grafana is provisioned with the dashboards that
//! exist and a data source that is there, and `.env.example` sets every variable compose needs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_norway::Value as Yaml;

use crate::helpers::deploy::{self, root};

/// The compose file, merge keys applied.
fn compose() -> Yaml {
    deploy::yaml(&root().join("docker-compose.yml"))
}

fn services(compose: &Yaml) -> BTreeMap<String, Yaml> {
    compose["services"]
        .as_mapping()
        .expect("services")
        .iter()
        .map(|(name, service)| {
            (
                name.as_str().expect("service name").to_owned(),
                service.clone(),
            )
        })
        .collect()
}

fn strings(value: &Yaml) -> Vec<String> {
    value
        .as_sequence()
        .map(|items| {
            items
                .iter()
                .map(|item| item.as_str().expect("a string").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A service's environment (a mapping in this file).
fn environment(service: &Yaml) -> BTreeMap<String, String> {
    service["environment"]
        .as_mapping()
        .map(|env| {
            env.iter()
                .map(|(k, v)| {
                    let value = match v {
                        Yaml::String(s) => s.clone(),
                        Yaml::Bool(b) => b.to_string(),
                        Yaml::Number(n) => n.to_string(),
                        other => panic!("environment value {other:?}"),
                    };
                    (k.as_str().expect("variable").to_owned(), value)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A service's bind mounts: (file or directory in the repository, path in the container).
fn bind_mounts(service: &Yaml) -> Vec<(PathBuf, String)> {
    strings(&service["volumes"])
        .into_iter()
        .filter(|v| v.starts_with("./"))
        .map(|volume| {
            let mut parts = volume.split(':');
            let source = parts.next().expect("source");
            let target = parts.next().expect("target").to_owned();
            (root().join(source.trim_start_matches("./")), target)
        })
        .collect()
}

/// Where a path inside a service's container comes from in the repository, through its bind
/// mounts.
fn in_repository(service: &Yaml, container_path: &str) -> Option<PathBuf> {
    bind_mounts(service)
        .into_iter()
        .find_map(|(source, target)| {
            let rest = container_path.strip_prefix(&target)?;
            if !rest.is_empty() && !rest.starts_with('/') {
                return None;
            }
            let rest = rest.trim_start_matches('/');
            Some(if rest.is_empty() {
                source
            } else {
                source.join(rest)
            })
        })
}

/// The container side of each published port.
fn published_ports(service: &Yaml) -> BTreeSet<u16> {
    strings(&service["ports"])
        .iter()
        .map(|port| {
            port.rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("port {port:?}"))
        })
        .collect()
}

/// The port of `host:port` or of a URL's authority.
fn port_of(address: &str) -> u16 {
    let authority = address.split("://").last().unwrap_or(address);
    let authority = authority.split('/').next().unwrap_or(authority);
    authority
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {address:?}"))
}

fn host_of(address: &str) -> &str {
    let authority = address.split("://").last().unwrap_or(address);
    let authority = authority.split('/').next().unwrap_or(authority);
    authority.split(':').next().unwrap_or(authority)
}

/// The plugins a RabbitMQ service enables, from its mounted `enabled_plugins` file.
fn rabbitmq_plugins(service: &Yaml) -> BTreeSet<String> {
    let Some(file) = in_repository(service, "/etc/rabbitmq/enabled_plugins") else {
        return BTreeSet::new();
    };
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    text.trim()
        .trim_end_matches('.')
        .trim_matches(['[', ']'])
        .split(',')
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

/// The ports a compose service listens on: what its settings (the services' `*_HTTP_ADDR`, the
/// enabled RabbitMQ plugins, Jaeger's OTLP switch) or its image's defaults make it listen on.
fn listening_ports(name: &str, service: &Yaml) -> BTreeSet<u16> {
    let image = service["image"].as_str().unwrap_or("");
    let env = environment(service);
    let mut ports: BTreeSet<u16> = env
        .iter()
        .filter(|(k, _)| k.ends_with("_HTTP_ADDR"))
        .map(|(_, v)| port_of(v))
        .collect();
    if image.starts_with("rabbitmq:") {
        ports.insert(5672);
        let plugins = rabbitmq_plugins(service);
        // The management image enables its plugin by itself unless the mounted file says otherwise.
        if plugins.contains("rabbitmq_management")
            || (plugins.is_empty() && image.contains("management"))
        {
            ports.insert(15672);
        }
        if plugins.contains("rabbitmq_prometheus") {
            ports.insert(15692);
        }
    } else if image.starts_with("postgres:") {
        ports.insert(5432);
    } else if image.starts_with("prom/prometheus:") {
        ports.insert(9090);
    } else if image.starts_with("grafana/grafana:") {
        ports.insert(3000);
    } else if image.starts_with("jaegertracing/all-in-one:") {
        ports.insert(16686);
        if env
            .get("COLLECTOR_OTLP_ENABLED")
            .is_some_and(|v| v == "true")
        {
            ports.extend([4317, 4318]);
        }
    }
    assert!(
        !ports.is_empty() || service["ports"].is_null(),
        "{name}: which ports does it listen on?"
    );
    ports
}

#[test]
fn every_file_compose_mounts_is_in_the_repository_and_every_volume_is_declared() {
    let compose = compose();
    let declared: BTreeSet<String> = compose["volumes"]
        .as_mapping()
        .expect("volumes")
        .keys()
        .map(|k| k.as_str().expect("volume name").to_owned())
        .collect();
    let mut mounts = 0;
    for (name, service) in services(&compose) {
        for volume in strings(&service["volumes"]) {
            let source = volume.split(':').next().expect("source");
            if source.starts_with("./") {
                let path = root().join(source.trim_start_matches("./"));
                assert!(
                    path.exists(),
                    "{name} mounts {source}, which does not exist"
                );
                mounts += 1;
            } else {
                assert!(
                    declared.contains(source),
                    "{name} mounts volume {source}, which is not declared"
                );
            }
        }
    }
    assert!(mounts >= 6, "only {mounts} bind mounts");
}

#[test]
fn every_compose_command_is_a_binary_the_image_builds_and_installs() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    let compose = compose();
    let mut commands = 0;
    for (name, service) in services(&compose) {
        // Built from this repository, running one of its programs (not a shell).
        if service["build"].is_null() || !service["entrypoint"].is_null() {
            continue;
        }
        let Some(binary) = strings(&service["command"]).into_iter().next() else {
            continue;
        };
        let package = std::fs::read_dir(root().join("services"))
            .expect("services/")
            .chain(std::fs::read_dir(root().join("tools")).expect("tools/"))
            .filter_map(Result::ok)
            .find_map(|dir| {
                let manifest = std::fs::read_to_string(dir.path().join("Cargo.toml")).ok()?;
                let is_bin = manifest.contains(&format!("name = \"{binary}\""));
                let package = manifest
                    .lines()
                    .find_map(|l| l.strip_prefix("name = \""))?
                    .trim_end_matches('"')
                    .to_owned();
                is_bin.then_some(package)
            })
            .unwrap_or_else(|| panic!("{name} runs {binary}, which no package builds"));
        assert!(
            dockerfile.contains(&format!("-p {package} ")),
            "{name} runs {binary}: the image does not build {package}"
        );
        assert!(
            dockerfile.contains(&format!("target/release/{binary} ")),
            "{name} runs {binary}: the image does not install it"
        );
        commands += 1;
    }
    assert!(
        commands >= 5,
        "only {commands} services run the image's binaries"
    );
}

#[test]
fn each_service_publishes_and_probes_the_port_it_listens_on() {
    let compose = compose();
    let services = services(&compose);
    for app in ["order", "store", "delivery"] {
        let service = &services[app];
        let env = environment(service);
        let addr = &env[&format!("{}_HTTP_ADDR", app.to_uppercase())];
        assert!(
            addr.starts_with("0.0.0.0:"),
            "{app} listens on {addr}: not reachable from outside its container"
        );
        let port = port_of(addr);
        assert_eq!(published_ports(service), BTreeSet::from([port]), "{app}");
        let probe = strings(&service["healthcheck"]["test"]).join(" ");
        assert!(
            probe.contains(&format!("127.0.0.1:{port}/readyz")),
            "{app} probes {probe}"
        );
        // The trace viewer: a compose service listening on the port the services send to.
        let otlp = &env["OTEL_EXPORTER_OTLP_ENDPOINT"];
        let viewer = services
            .get(host_of(otlp))
            .unwrap_or_else(|| panic!("{app} sends traces to {otlp}: no such compose service"));
        assert!(
            listening_ports(host_of(otlp), viewer).contains(&port_of(otlp)),
            "{app} sends traces to {otlp}, where nothing listens"
        );
    }
    for (name, service) in &services {
        let listening = listening_ports(name, service);
        for port in published_ports(service) {
            assert!(
                listening.contains(&port),
                "{name} publishes {port}, but listens on {listening:?}"
            );
        }
    }
}

#[test]
fn prometheus_scrapes_compose_services_on_the_ports_they_listen_on_and_loads_the_rules() {
    let compose = compose();
    let services = services(&compose);
    let prometheus = &services["prometheus"];
    // The configuration Prometheus runs with is the one in deploy/.
    let command = strings(&prometheus["command"]);
    let config = command
        .iter()
        .find_map(|arg| arg.strip_prefix("--config.file="))
        .expect("--config.file");
    assert_eq!(
        in_repository(prometheus, config),
        Some(root().join(deploy::PROMETHEUS_CONFIG))
    );

    let jobs = deploy::scrape_jobs();
    let mut scraped = BTreeSet::new();
    for job in &jobs {
        assert!(!job.targets.is_empty(), "job {} has no target", job.name);
        for target in &job.targets {
            let host = host_of(target);
            let service = services.get(host).unwrap_or_else(|| {
                panic!("job {} scrapes {target}: no such compose service", job.name)
            });
            let listening = listening_ports(host, service);
            assert!(
                listening.contains(&port_of(target)),
                "job {} scrapes {target}, but {host} listens on {listening:?}",
                job.name
            );
            scraped.insert(host.to_owned());
        }
    }
    for wanted in ["order", "store", "delivery", "rabbitmq"] {
        assert!(scraped.contains(wanted), "nothing scrapes {wanted}");
    }

    // The rule files it loads (relative to its configuration) are the ones in deploy/.
    let config = deploy::yaml(&root().join(deploy::PROMETHEUS_CONFIG));
    let patterns = strings(&config["rule_files"]);
    assert_eq!(patterns, ["rules/*.yml"], "rule_files");
    assert!(
        !deploy::files(deploy::RULES, ".yml").is_empty(),
        "no rule file"
    );
    assert!(deploy::rule_expressions().len() >= 4, "too few alerts");
}

#[test]
fn grafana_is_provisioned_with_the_dashboards_of_the_repository_on_a_data_source_that_is_there() {
    let compose = compose();
    let services = services(&compose);
    let grafana = &services["grafana"];
    let provisioning = in_repository(grafana, "/etc/grafana/provisioning")
        .expect("Grafana's provisioning is mounted from the repository");

    // Data sources: each reaches a compose service on a port it listens on.
    let mut uids = BTreeSet::new();
    for file in yaml_files(&provisioning.join("datasources")) {
        for source in deploy::yaml(&file)["datasources"]
            .as_sequence()
            .expect("datasources")
        {
            let url = source["url"].as_str().expect("url");
            let host = host_of(url);
            let service = services
                .get(host)
                .unwrap_or_else(|| panic!("data source {url}: no such compose service"));
            assert!(
                listening_ports(host, service).contains(&port_of(url)),
                "data source {url}: {host} does not listen there"
            );
            uids.insert(source["uid"].as_str().expect("uid").to_owned());
        }
    }
    assert!(!uids.is_empty(), "no data source");

    // Dashboard providers: the directories they load are the repository's dashboards.
    let mut provided = BTreeSet::new();
    for file in yaml_files(&provisioning.join("dashboards")) {
        for provider in deploy::yaml(&file)["providers"]
            .as_sequence()
            .expect("providers")
        {
            let path = provider["options"]["path"].as_str().expect("options.path");
            let dir = in_repository(grafana, path).unwrap_or_else(|| {
                panic!("provider path {path} is not mounted from the repository")
            });
            assert!(dir.is_dir(), "{} is not a directory", dir.display());
            provided.insert(dir);
        }
    }
    let dashboards = deploy::files(deploy::DASHBOARDS, ".json");
    assert!(!dashboards.is_empty(), "no dashboard");
    for dashboard in &dashboards {
        assert!(
            dashboard.parent().is_some_and(|dir| provided.contains(dir)),
            "{} is not loaded by any provider ({provided:?})",
            dashboard.display()
        );
        // Its panels use the provisioned data source.
        let json = deploy::json(dashboard);
        let panels = json["panels"].as_array().expect("panels");
        for panel in panels.iter().filter(|p| p["type"] != "row") {
            let uid = panel["datasource"]["uid"].as_str().unwrap_or("");
            assert!(
                uids.contains(uid),
                "panel {} uses data source {uid:?}",
                panel["title"]
            );
        }
    }
    // The home dashboard is one of them.
    if let Some(home) = environment(grafana).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH") {
        let file = in_repository(grafana, home).expect("the home dashboard is mounted");
        assert!(dashboards.contains(&file), "home dashboard {home}");
    }
}

/// The services reach RabbitMQ and PostgreSQL over TLS, verifying both with the authority in a
/// volume that the certificate maker fills and every party mounts: amqps to a port the broker
/// nodes' mounted TLS configuration listens on, and `sslmode=verify-full` to a PostgreSQL started
/// with `ssl=on`.
#[test]
fn the_services_reach_the_broker_and_postgresql_over_tls_with_the_compose_authority() {
    let compose = compose();
    let services = services(&compose);
    let mounts = |service: &Yaml| -> Vec<(String, String)> {
        strings(&service["volumes"])
            .iter()
            .filter_map(|v| {
                let mut parts = v.split(':');
                Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
            })
            .collect()
    };
    let tls_volume = |service: &Yaml| -> Option<String> {
        mounts(service)
            .into_iter()
            .find(|(source, _)| source == "tls")
            .map(|(_, target)| target)
    };
    assert_eq!(
        tls_volume(&services["tls-certs"]).as_deref(),
        Some("/tls"),
        "the certificate maker fills the tls volume"
    );
    let broker = &services["rabbitmq"];
    let conf = in_repository(broker, "/etc/rabbitmq/conf.d/30-tls.conf").expect("a TLS config");
    let conf = std::fs::read_to_string(conf).unwrap();
    assert!(conf.contains("listeners.ssl.default = 5671"), "{conf}");
    let broker_tls = tls_volume(broker).expect("the broker mounts the tls volume");
    assert!(conf.contains(&format!("{broker_tls}/server.key")), "{conf}");
    let postgres = &services["postgres"];
    let command = strings(&postgres["command"]).join(" ");
    let pg_tls = tls_volume(postgres).expect("postgres mounts the tls volume");
    assert!(command.contains("ssl=on"), "{command}");
    assert!(
        command.contains(&format!("ssl_key_file={pg_tls}/server.key")),
        "{command}"
    );
    // `host:port` of a URL with credentials.
    let server = |url: &str| -> String {
        let authority = url.split("://").nth(1).unwrap_or(url);
        let authority = authority.split('/').next().unwrap_or(authority);
        authority.rsplit('@').next().unwrap_or(authority).to_owned()
    };
    for app in ["order", "store", "delivery"] {
        let service = &services[app];
        let env = environment(service);
        let ca_dir = tls_volume(service).unwrap_or_else(|| panic!("{app} mounts the tls volume"));
        let ca = format!("{ca_dir}/ca.pem");
        let amqp = &env["AMQP_URL"];
        assert!(amqp.starts_with("amqps://"), "{app}: {amqp}");
        assert_eq!(server(amqp), "rabbitmq:5671", "{app}: {amqp}");
        assert_eq!(env["AMQP_TLS_CA_FILE"], ca, "{app}");
        let db = &env[&format!("{}_DATABASE_URL", app.to_uppercase())];
        assert!(db.contains("sslmode=verify-full"), "{app}: {db}");
        assert!(db.contains(&format!("sslrootcert={ca}")), "{app}: {db}");
        assert_eq!(server(db), "postgres:5432", "{app}: {db}");
    }
}

#[test]
fn env_example_sets_every_variable_that_compose_requires() {
    let text = std::fs::read_to_string(root().join("docker-compose.yml")).unwrap();
    let example = std::fs::read_to_string(root().join(".env.example")).unwrap();
    let set: BTreeSet<&str> = example
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim()))
        .collect();
    let mut required = BTreeSet::new();
    for (at, _) in text.match_indices("${") {
        let rest = &text[at + 2..];
        let end = rest.find('}').expect("closing brace");
        let expression = &rest[..end];
        if let Some((name, _)) = expression.split_once(":?") {
            required.insert(name.to_owned());
        }
    }
    assert!(required.contains("GRAFANA_ADMIN_PASSWORD"), "{required:?}");
    for name in &required {
        assert!(
            set.contains(name.as_str()),
            ".env.example does not set {name}"
        );
    }
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "nothing in {}", dir.display());
    files
}
