//! A throwaway certificate authority for one cluster: the certificate every node presents (to
//! clients and to the other nodes), a client certificate it trusts, and a client certificate
//! from another authority that it must refuse.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The files of a throwaway public-key infrastructure, all PEM, in one directory.
#[derive(Clone, Debug)]
pub struct Pki {
    /// The certificate of the authority the cluster trusts.
    pub ca: PathBuf,
    /// The nodes' certificate (for `localhost` and `127.0.0.1`, server and client use: nodes
    /// present it to clients and to each other on their routes).
    pub node_cert: PathBuf,
    /// The nodes' private key.
    pub node_key: PathBuf,
    /// A client certificate signed by the cluster's authority.
    pub client_cert: PathBuf,
    /// Its private key.
    pub client_key: PathBuf,
    /// The certificate of another authority, which the cluster does not trust.
    pub foreign_ca: PathBuf,
    /// A client certificate signed by the other authority: the cluster refuses it.
    pub foreign_client_cert: PathBuf,
    /// Its private key.
    pub foreign_client_key: PathBuf,
}

fn other(e: rcgen::Error) -> io::Error {
    io::Error::other(format!("making a test certificate: {e}"))
}

/// A certificate authority: its certificate's PEM and what signs with it.
struct Authority {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Authority {
    fn new(name: &str) -> io::Result<Authority> {
        let key = KeyPair::generate().map_err(other)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(other)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).map_err(other)?;
        Ok(Authority {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A certificate for `names` with the given uses: (certificate PEM, key PEM).
    fn sign(
        &self,
        common_name: &str,
        names: &[&str],
        uses: Vec<ExtendedKeyUsagePurpose>,
    ) -> io::Result<(String, String)> {
        let key = KeyPair::generate().map_err(other)?;
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).map_err(other)?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = uses;
        let cert = params.signed_by(&key, &self.issuer).map_err(other)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// Writes `contents` to a new file at `path`, readable by its owner only from its creation.
pub(crate) fn write_private(path: &Path, contents: &str) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?
        .write_all(contents.as_bytes())
}

/// Writes `contents` to `dir/name`: a key readable by its owner only, a certificate by all.
fn write(dir: &Path, name: &str, contents: &str) -> io::Result<PathBuf> {
    let path = dir.join(name);
    if name.ends_with(".key") {
        write_private(&path, contents)?;
    } else {
        fs::write(&path, contents)?;
    }
    Ok(path)
}

impl Pki {
    /// Makes a new authority, the nodes' certificate, a trusted client certificate and a foreign
    /// one, and writes them to `dir`.
    ///
    /// # Errors
    ///
    /// When a certificate cannot be made or a file cannot be written.
    pub fn create(dir: &Path) -> io::Result<Pki> {
        fs::create_dir_all(dir)?;
        let ca = Authority::new("varvedb test authority")?;
        let (node_cert, node_key) = ca.sign(
            "varvedb test node",
            &["localhost", "127.0.0.1"],
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )?;
        let (client_cert, client_key) = ca.sign(
            "varvedb test client",
            &["varvedb-client"],
            vec![ExtendedKeyUsagePurpose::ClientAuth],
        )?;
        let foreign = Authority::new("an authority the cluster does not trust")?;
        let (foreign_cert, foreign_key) = foreign.sign(
            "varvedb foreign client",
            &["varvedb-client"],
            vec![ExtendedKeyUsagePurpose::ClientAuth],
        )?;
        Ok(Pki {
            ca: write(dir, "ca.pem", &ca.pem)?,
            node_cert: write(dir, "node.pem", &node_cert)?,
            node_key: write(dir, "node.key", &node_key)?,
            client_cert: write(dir, "client.pem", &client_cert)?,
            client_key: write(dir, "client.key", &client_key)?,
            foreign_ca: write(dir, "foreign-ca.pem", &foreign.pem)?,
            foreign_client_cert: write(dir, "foreign-client.pem", &foreign_cert)?,
            foreign_client_key: write(dir, "foreign-client.key", &foreign_key)?,
        })
    }
}
