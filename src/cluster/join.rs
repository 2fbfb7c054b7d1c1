//! Pre-shared bootstrap tokens in k0s's format (`cmd/token/preshared.go`, `pkg/token/`):
//! a token `<id>.<secret>` (6 and 16 characters of `[a-z0-9]`, as kubeadm makes them), the
//! Secret `bootstrap-token-<id>` the controller applies from its manifests folder, and the
//! join token a node is given: the base64 of a gzip'd (best compression) kubeconfig naming
//! the API, the cluster CA and the token.

use std::io::Write;

use base64::Engine;
use rand::Rng;

use crate::node::Role;

/// The kubeconfig user k0s expects in a worker's token (it rejects other names).
pub const WORKER_USER: &str = "kubelet-bootstrap";
/// ... and in a controller's join token.
pub const CONTROLLER_USER: &str = "controller-bootstrap";
/// The port a worker joins through (the Kubernetes API).
pub const API_PORT: u16 = 6443;
/// The port a controller joins through (the k0s API).
pub const K0S_API_PORT: u16 = 9443;

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

fn random_word(n: usize) -> String {
    let mut rng = rand::rngs::OsRng;
    (0..n)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// What a token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Join as a worker (Kubernetes API, kubelet TLS bootstrap).
    Worker,
    /// Join as a further controller (k0s API).
    Controller,
}

impl Kind {
    pub fn for_role(role: Role) -> Kind {
        match role {
            Role::Worker => Kind::Worker,
            _ => Kind::Controller,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Worker => "worker",
            Kind::Controller => "controller",
        }
    }

    pub fn user(self) -> &'static str {
        match self {
            Kind::Worker => WORKER_USER,
            Kind::Controller => CONTROLLER_USER,
        }
    }

    pub fn port(self) -> u16 {
        match self {
            Kind::Worker => API_PORT,
            Kind::Controller => K0S_API_PORT,
        }
    }
}

/// A new random `(id, secret)`.
pub fn new_token() -> (String, String) {
    (random_word(6), random_word(16))
}

/// Whether `s` is a token id (6 of `[a-z0-9]`) or, with `n = 16`, a token secret.
pub fn is_word(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| ALPHABET.contains(&b))
}

/// `https://ADDR:PORT` (an IPv6 address in brackets).
pub fn url(address: &str, port: u16) -> String {
    if address.contains(':') {
        format!("https://[{address}]:{port}")
    } else {
        format!("https://{address}:{port}")
    }
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// The kubeconfig k0s's `GenerateKubeconfig` writes (cluster and context `k0s`).
pub fn kubeconfig(server: &str, ca_pem: &str, user: &str, token: &str) -> String {
    format!(
        "apiVersion: v1\n\
         clusters:\n\
         - cluster:\n    certificate-authority-data: {ca}\n    server: {server}\n  name: k0s\n\
         contexts:\n\
         - context:\n    cluster: k0s\n    user: {user}\n  name: k0s\n\
         current-context: k0s\n\
         kind: Config\n\
         preferences: {{}}\n\
         users:\n\
         - name: {user}\n  user:\n    token: {token}\n",
        ca = b64(ca_pem.as_bytes()),
    )
}

/// k0s's `JoinEncode`: base64 of the gzip'd (best compression) kubeconfig.
pub fn join_encode(kubeconfig: &str) -> String {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(kubeconfig.as_bytes())
        .expect("writing to memory");
    b64(&gz.finish().expect("writing to memory"))
}

/// The join token for one node.
pub fn join_token(kind: Kind, address: &str, ca_pem: &str, id: &str, secret: &str) -> String {
    join_encode(&kubeconfig(
        &url(address, kind.port()),
        ca_pem,
        kind.user(),
        &format!("{id}.{secret}"),
    ))
}

/// The Secret that makes a token valid, as k0s's `RandomBootstrapSecret` makes it (no
/// expiration: the card may sit in a drawer for months), `description` naming the node.
pub fn secret_yaml(kind: Kind, id: &str, secret: &str, node: &str) -> String {
    let mut data = vec![
        (
            "description",
            format!("edgeimg pre-shared {} token for node {node}", kind.as_str()),
        ),
        ("token-id", id.to_string()),
        ("token-secret", secret.to_string()),
    ];
    match kind {
        Kind::Worker => data.push(("usage-bootstrap-authentication", "true".into())),
        Kind::Controller => {
            data.push(("usage-bootstrap-controller-join", "true".into()));
            data.push(("usage-controller-join", "true".into()));
        }
    }
    data.sort();
    let mut out = String::from("apiVersion: v1\ndata:\n");
    for (k, v) in data {
        out.push_str(&format!("  {k}: {}\n", b64(v.as_bytes())));
    }
    out.push_str(&format!(
        "kind: Secret\nmetadata:\n  labels:\n    app.kubernetes.io/managed-by: edgeimg\n    edgeimg.node: {node}\n  name: bootstrap-token-{id}\n  namespace: kube-system\ntype: bootstrap.kubernetes.io/token\n"
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_kubeadms_shape() {
        let (id, secret) = new_token();
        assert!(is_word(&id, 6) && is_word(&secret, 16), "{id}.{secret}");
        assert_ne!(new_token(), new_token());
    }

    #[test]
    fn a_join_token_passes_the_node_configs_check() {
        let t = join_token(
            Kind::Worker,
            "10.0.0.1",
            "PEM",
            "abcdef",
            "0123456789abcdef",
        );
        assert_eq!(crate::node::token::check(t.as_bytes()).unwrap(), t);
        assert_eq!(url("fd00::1", 9443), "https://[fd00::1]:9443");
    }
}
