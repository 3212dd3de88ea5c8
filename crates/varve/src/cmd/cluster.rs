//! `varve cluster-check --server URL ...`

use std::io::Write;

use serde_json::json;
use std::path::Path;

use varvedb::cluster::{
    check as check_cluster, lag as replica_lag, ClusterAuth, ClusterConfig, ClusterError,
    ClusterTls,
};
use varvedb::Error;

use crate::cli::ClusterArgs;
use crate::error::{CliError, CliResult};
use crate::output::json_line;
use crate::store::open_existing;

/// The environment variable that holds the password when no --password-file is given.
const PASSWORD_VAR: &str = "VARVE_NATS_PASSWORD";

fn config(args: &ClusterArgs) -> CliResult<ClusterConfig> {
    let auth = if let Some(user) = &args.user {
        let password = match &args.password_file {
            Some(file) => std::fs::read_to_string(file)
                .map_err(|e| {
                    CliError::usage(format!(
                        "cannot read the password file {}: {e}",
                        file.display()
                    ))
                })?
                .trim_end_matches(['\n', '\r'])
                .to_owned(),
            None => std::env::var(PASSWORD_VAR).map_err(|_| {
                CliError::usage(format!("--user {user} needs a password")).hint(format!(
                    "give it in {PASSWORD_VAR} or with --password-file FILE"
                ))
            })?,
        };
        ClusterAuth::user_and_password(user.clone(), password)
    } else if let Some(creds) = &args.creds {
        ClusterAuth::CredentialsFile(creds.clone())
    } else if let Some(nkey) = &args.nkey {
        ClusterAuth::NkeyFile(nkey.clone())
    } else {
        ClusterAuth::None
    };
    Ok(ClusterConfig {
        servers: args.servers.clone(),
        stream: args.stream.clone(),
        subject_prefix: args.subject_prefix.clone(),
        replicas: args.replicas,
        duplicate_window: args.duplicate_window,
        max_message_size: args.max_message_size,
        auth,
        tls: ClusterTls {
            ca_file: args.ca.clone(),
            client_cert: args.cert.clone().zip(args.key.clone()),
        },
        ..ClusterConfig::default()
    })
}

/// What to do about a cluster error.
fn hint(e: &ClusterError) -> Option<&'static str> {
    Some(match e {
        ClusterError::Unauthorized { .. } => {
            "check --user and the password (VARVE_NATS_PASSWORD or --password-file), --creds or --nkey"
        }
        ClusterError::Tls { .. } => {
            "check --ca (the authority that signed the servers' certificates) and --cert/--key (a client certificate the servers trust)"
        }
        ClusterError::Unreachable { .. } => "check the --server URLs and that the servers run",
        ClusterError::StreamMismatch { .. } => {
            "VarveDB never changes an existing stream: fix it with the nats tool, or name another with --stream"
        }
        ClusterError::ServerTooOld { .. } => "upgrade the servers to nats-server 2.12 or newer",
        ClusterError::PayloadLimit { .. } => {
            "raise max_payload on every server, or lower --max-message-size"
        }
        ClusterError::OtherLog { .. } => {
            "name the store of a replica, and the --stream it replicates"
        }
        _ => return None,
    })
}

/// The command's error for a failed cluster call, with what to do about it.
fn failed(e: Error) -> CliError {
    match e {
        Error::Cluster(e) => {
            let advice = hint(&e);
            let mut err = CliError::usage(e.to_string());
            if let Some(advice) = advice {
                err = err.hint(advice);
            }
            err
        }
        e => CliError::usage(e.to_string()),
    }
}

/// `varve cluster-lag PATH --server URL ...`
pub fn lag(path: &Path, args: &ClusterArgs, json: bool, out: &mut dyn Write) -> CliResult<u8> {
    let config = config(args)?;
    let storage = open_existing(path)?;
    let lag = replica_lag(&storage, &config).map_err(failed)?;
    if json {
        json_line(
            out,
            &json!({
                "stream": lag.stream,
                "applied": lag.applied,
                "last_sequence": lag.last,
                "lag_messages": lag.messages,
                "lag_seconds": lag.seconds,
            }),
        )?;
        return Ok(0);
    }
    writeln!(out, "stream          {}", lag.stream)?;
    writeln!(out, "applied         {}", lag.applied)?;
    writeln!(out, "last sequence   {}", lag.last)?;
    writeln!(
        out,
        "lag             {} messages, {:.3} s",
        lag.messages, lag.seconds
    )?;
    Ok(0)
}

pub fn check(args: &ClusterArgs, json: bool, out: &mut dyn Write) -> CliResult<u8> {
    let config = config(args)?;
    let report = check_cluster(&config).map_err(failed)?;
    if json {
        let followers: Vec<_> = report
            .followers
            .iter()
            .map(|(name, current)| json!({"name": name, "current": current}))
            .collect();
        json_line(
            out,
            &json!({
                "server": report.server,
                "server_version": report.server_version,
                "stream": report.stream,
                "created": report.created,
                "replicas": report.replicas,
                "leader": report.leader,
                "followers": followers,
                "messages": report.messages,
                "last_sequence": report.last_sequence,
            }),
        )?;
        return Ok(0);
    }
    writeln!(
        out,
        "server          {} (nats-server {})",
        report.server, report.server_version
    )?;
    writeln!(
        out,
        "stream          {} ({})",
        report.stream,
        if report.created {
            "created now"
        } else {
            "exists, settings checked"
        }
    )?;
    writeln!(out, "replicas        {}", report.replicas)?;
    writeln!(
        out,
        "leader          {}",
        report.leader.as_deref().unwrap_or("none")
    )?;
    for (name, current) in &report.followers {
        writeln!(
            out,
            "follower        {name} ({})",
            if *current { "current" } else { "behind" }
        )?;
    }
    writeln!(out, "messages        {}", report.messages)?;
    writeln!(out, "last sequence   {}", report.last_sequence)?;
    Ok(0)
}
