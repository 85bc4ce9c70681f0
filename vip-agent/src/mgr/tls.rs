//! TLS to the local mysqld, from `[mysql.tls]`, with rustls (no OpenSSL to install).

use mysql_async::{ClientIdentity, SslOpts};

use crate::config::TlsConfig;

pub fn ssl_opts(tls: &TlsConfig) -> SslOpts {
    let mut opts = SslOpts::default();
    if let Some(ca) = &tls.ca {
        // A CA named in the config is the only one trusted.
        opts = opts
            .with_root_certs(vec![ca.clone().into()])
            .with_disable_built_in_roots(true);
    }
    if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
        opts = opts.with_client_identity(Some(ClientIdentity::new(
            cert.clone().into(),
            key.clone().into(),
        )));
    }
    // The certificate chain is always verified; only the name check can be turned off
    // (mysqld certificates rarely name 127.0.0.1).
    opts.with_danger_skip_domain_validation(!tls.verify_identity)
}
