//! Signing keys of a test's own, made with `openssl` in a temporary folder, and the tokens they
//! sign: the identity provider of the tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use identity::{Claims, Issuer, Role};

/// How long the tests' tokens are valid.
const TTL: Duration = Duration::from_secs(3600);

/// The issuer and audience the services are told to expect.
pub const ISSUER: &str = "tenminute-test";
/// The audience.
pub const AUDIENCE: &str = "tenminute";

/// A key pair (and its folder, removed on drop).
pub struct TestKeys {
    dir: PathBuf,
    /// Signs tokens the services take.
    pub issuer: Issuer,
}

impl TestKeys {
    /// A fresh Ed25519 key pair (`algorithm` `ed25519`) or ECDSA P-256 (`ec`).
    pub fn new(algorithm: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tenminute-keys-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("a temporary folder");
        let private = dir.join("private.pem");
        let mut generate = Command::new("openssl");
        match algorithm {
            "ec" => generate.args([
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ]),
            other => generate.args(["genpkey", "-algorithm", other]),
        };
        openssl(generate.arg("-out").arg(&private));
        openssl(
            Command::new("openssl")
                .args(["pkey", "-pubout", "-in"])
                .arg(&private)
                .arg("-out")
                .arg(dir.join("public.pem")),
        );
        let issuer = Issuer::from_pem_file(&private, ISSUER, AUDIENCE).expect("the key loads");
        Self { dir, issuer }
    }

    /// The public key file, for `AUTH_PUBLIC_KEY_FILE`.
    pub fn public_key_file(&self) -> PathBuf {
        self.dir.join("public.pem")
    }

    /// The private key file, for `AUTH_SIGNING_KEY_FILE`.
    pub fn private_key_file(&self) -> PathBuf {
        self.dir.join("private.pem")
    }

    /// A customer's token.
    pub fn customer(&self, customer: &str) -> String {
        self.issuer.customer(customer, TTL).expect("signs")
    }

    /// A rider's token, for agent `agent`.
    pub fn rider(&self, agent: i64) -> String {
        self.issuer.rider(agent, TTL).expect("signs")
    }

    /// An operator's token.
    pub fn operator(&self) -> String {
        self.issuer.operator("ops", TTL).expect("signs")
    }

    /// A token with these claims, as they are (expired, another issuer or audience).
    pub fn sign(&self, claims: &Claims) -> String {
        self.issuer.sign(claims).expect("signs")
    }

    /// Claims of an operator's token valid now, to change before signing.
    pub fn operator_claims() -> Claims {
        let now = chrono::Utc::now().timestamp().unsigned_abs();
        Claims {
            sub: "ops".to_owned(),
            role: Role::Operator,
            agent_id: None,
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            iat: now,
            exp: now + 3600,
        }
    }
}

impl Drop for TestKeys {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn openssl(command: &mut Command) {
    let output = command.output().expect("openssl runs");
    assert!(
        output.status.success(),
        "openssl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Settings that make a service verify tokens with the public key at `public_key`.
pub fn verifying_with(public_key: &Path) -> Vec<(String, String)> {
    vec![
        ("AUTH_DISABLED".to_owned(), "false".to_owned()),
        (
            "AUTH_PUBLIC_KEY_FILE".to_owned(),
            public_key.display().to_string(),
        ),
        ("AUTH_ISSUER".to_owned(), ISSUER.to_owned()),
        ("AUTH_AUDIENCE".to_owned(), AUDIENCE.to_owned()),
    ]
}

impl TestKeys {
    /// The public key as a JWK with key id `kid` (`OKP` Ed25519 or `EC` P-256), from its DER
    /// form: the raw key is its last 32 bytes (Ed25519) or the point after `0x04` (P-256).
    pub fn jwk(&self, kid: &str) -> serde_json::Value {
        let output = Command::new("openssl")
            .args(["pkey", "-pubin", "-outform", "DER", "-in"])
            .arg(self.public_key_file())
            .output()
            .expect("openssl runs");
        assert!(output.status.success(), "openssl pkey -outform DER");
        let der = output.stdout;
        if der.len() == 44 {
            serde_json::json!({
                "kty": "OKP", "crv": "Ed25519", "kid": kid, "alg": "EdDSA", "use": "sig",
                "x": base64url(&der[12..]),
            })
        } else {
            let point = &der[der.len() - 64..];
            serde_json::json!({
                "kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
                "x": base64url(&point[..32]), "y": base64url(&point[32..]),
            })
        }
    }
}

/// Base64url without padding, as JOSE writes it.
pub fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// An identity provider's JWKS address, served by the test: the keys it lists can change.
pub struct JwksServer {
    addr: std::net::SocketAddr,
    keys: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
    _server: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    /// Serves `keys` at `/.well-known/jwks.json` on a port of its own.
    pub async fn start(keys: Vec<serde_json::Value>) -> Self {
        let keys = std::sync::Arc::new(std::sync::Mutex::new(keys));
        let shared = std::sync::Arc::clone(&keys);
        let app = axum::Router::new().route(
            "/.well-known/jwks.json",
            axum::routing::get(move || {
                let keys = shared.lock().map(|k| k.clone()).unwrap_or_default();
                async move { axum::Json(serde_json::json!({ "keys": keys })) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let addr = listener.local_addr().expect("its address");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            keys,
            _server: server,
        }
    }

    /// The JWKS address.
    pub fn url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }

    /// Lists `keys` from now on.
    pub fn set(&self, keys: Vec<serde_json::Value>) {
        if let Ok(mut held) = self.keys.lock() {
            *held = keys;
        }
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self._server.abort();
    }
}
