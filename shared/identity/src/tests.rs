//! Each kind of key against its own tokens and every bad one.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};

use crate::*;

/// A key pair made with `openssl` (`ed25519`, `ec` for P-256, `rsa`) in a folder of its own.
fn key_pair(algorithm: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "identity-test-{algorithm}-{}-{n}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (private, public) = (dir.join("private.pem"), dir.join("public.pem"));
    let mut genpkey = std::process::Command::new("openssl");
    genpkey.arg("genpkey");
    match algorithm {
        "ec" => genpkey.args(["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]),
        "rsa" => genpkey.args(["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]),
        other => genpkey.args(["-algorithm", other]),
    };
    assert!(
        genpkey
            .arg("-out")
            .arg(&private)
            .status()
            .unwrap()
            .success()
    );
    assert!(
        std::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&private)
            .arg("-out")
            .arg(&public)
            .status()
            .unwrap()
            .success()
    );
    (private, public)
}

fn claims(role: Role, agent_id: Option<i64>) -> Claims {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    Claims {
        sub: "s-1".to_owned(),
        role,
        agent_id,
        iss: "iss".to_owned(),
        aud: "aud".to_owned(),
        iat: now,
        exp: now + 60,
    }
}

#[tokio::test]
async fn each_kind_of_key_verifies_its_own_tokens_and_refuses_every_bad_one() {
    for algorithm in ["ed25519", "ec", "rsa"] {
        let (private, public) = key_pair(algorithm);
        let issuer = Issuer::from_pem_file(&private, "iss", "aud").unwrap();
        let verifier = Verifier::new(KeySource::PublicKeyFile(public.clone()), "iss", "aud")
            .await
            .unwrap();
        let ttl = Duration::from_secs(60);
        let verify = |token: String| {
            let verifier = verifier.clone();
            async move { verifier.verify(&token).await }
        };
        assert_eq!(
            verify(issuer.customer("c-42", ttl).unwrap()).await,
            Ok(Caller::Customer("c-42".to_owned())),
            "{algorithm}"
        );
        assert_eq!(
            verify(issuer.rider(7, ttl).unwrap()).await,
            Ok(Caller::Rider {
                agent_id: 7,
                subject: "rider-7".to_owned()
            })
        );
        assert!(matches!(
            verify(issuer.operator("ops", ttl).unwrap()).await,
            Ok(Caller::Operator(_))
        ));

        let mut expired = claims(Role::Operator, None);
        expired.exp -= 3_600;
        assert_eq!(
            verify(issuer.sign(&expired).unwrap()).await,
            Err(Rejected::Expired)
        );
        let mut foreign = claims(Role::Operator, None);
        foreign.iss = "other".to_owned();
        assert_eq!(
            verify(issuer.sign(&foreign).unwrap()).await,
            Err(Rejected::Issuer)
        );
        let mut elsewhere = claims(Role::Operator, None);
        elsewhere.aud = "other".to_owned();
        assert_eq!(
            verify(issuer.sign(&elsewhere).unwrap()).await,
            Err(Rejected::Audience)
        );
        assert!(matches!(
            verify(issuer.sign(&claims(Role::Rider, None)).unwrap()).await,
            Err(Rejected::Claims(_))
        ));
        // An HMAC made with the public key as its secret (algorithm confusion).
        let pem = std::fs::read(&public).unwrap();
        let hmac = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(Role::Operator, None),
            &EncodingKey::from_secret(&pem),
        )
        .unwrap();
        assert_eq!(verify(hmac).await, Err(Rejected::Algorithm), "{algorithm}");
        assert_eq!(verify("a.b.c".to_owned()).await, Err(Rejected::Malformed));
        remove(&private);
    }
}

#[tokio::test]
async fn a_token_of_another_key_is_refused() {
    let (_, public) = key_pair("ed25519");
    let (forger, _) = key_pair("ed25519");
    let verifier = Verifier::new(KeySource::PublicKeyFile(public.clone()), "iss", "aud")
        .await
        .unwrap();
    let forged = Issuer::from_pem_file(&forger, "iss", "aud")
        .unwrap()
        .operator("ops", Duration::from_secs(60))
        .unwrap();
    assert_eq!(verifier.verify(&forged).await, Err(Rejected::Signature));
    remove(&public);
    remove(&forger);
}

fn remove(file: &std::path::Path) {
    if let Some(dir) = file.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn roles_are_snake_case_in_tokens() {
    let json = serde_json::to_string(&Role::Operator).unwrap_or_default();
    assert_eq!(json, "\"operator\"");
}
