//! `GET /containers/{id}/top?ps_args=`: the host's `ps` (with the
//! client's arguments, `-ef` by default) narrowed to the container's
//! processes, as the shim lists them; the same answer dockerd gives.

use axum::extract::{Path, RawQuery, State};
use axum::Json;
use containerd_shim_protos::api;
use serde_json::{json, Value};

use super::Status;
use crate::docker::error::ApiResult;
use crate::docker::query::Query;
use crate::docker::{Frontend, NAMESPACE};
use crate::runtime::shim::{ctx, status_error};
use crate::{Error, Result};

/// `GET /containers/{id}/top?ps_args=`.
pub async fn top(
    State(frontend): State<Frontend>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    let query = Query::parse(raw.as_deref());
    let ps_args: Vec<String> = match query.get("ps_args").map(str::trim) {
        Some(args) if !args.is_empty() => args.split_whitespace().map(str::to_owned).collect(),
        _ => vec!["-ef".to_owned()],
    };
    let container = frontend.containers.resolve(&id)?;
    match container.status() {
        Status::Running | Status::Paused => {}
        Status::Restarting => {
            return Err(Error::precondition(format!(
                "Container {} is restarting, wait until the container is running",
                container.id
            ))
            .into())
        }
        _ => {
            return Err(
                Error::precondition(format!("Container {} is not running", container.id)).into(),
            )
        }
    }
    let task = frontend.backend.tasks.get(NAMESPACE, &container.id)?;
    let pids: Vec<u32> = task
        .client()
        .pids(
            ctx(),
            &api::PidsRequest {
                id: container.id.clone(),
                ..Default::default()
            },
        )
        .await
        .map_err(|err| status_error(err).context(format!("listing the processes of {id}")))?
        .processes
        .iter()
        .map(|p| p.pid)
        .collect();
    let output = tokio::process::Command::new("ps")
        .args(&ps_args)
        .output()
        .await
        .map_err(|err| Error::internal(format!("Error running ps: {err}")))?;
    if !output.status.success() {
        return Err(Error::internal(format!(
            "ps: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
        .into());
    }
    let (titles, processes) = select(&String::from_utf8_lossy(&output.stdout), &pids)?;
    Ok(Json(json!({ "Titles": titles, "Processes": processes })))
}

/// The title line and the rows of `ps` output whose PID is in `pids`; a
/// row's fields past the last title are its command, spaces kept.
fn select(output: &str, pids: &[u32]) -> Result<(Vec<String>, Vec<Vec<String>>)> {
    let mut lines = output.lines();
    let titles: Vec<String> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let pid_column = titles
        .iter()
        .position(|t| t == "PID")
        .ok_or_else(|| Error::invalid("Couldn't find PID field in ps output"))?;
    let mut processes = Vec::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(pid) = fields.get(pid_column).and_then(|p| p.parse::<u32>().ok()) else {
            return Err(Error::internal(format!(
                "unexpected pid in ps output: {line:?}"
            )));
        };
        if !pids.contains(&pid) {
            continue;
        }
        let last = titles.len().saturating_sub(1);
        let mut row: Vec<String> = fields.iter().take(last).map(|f| (*f).to_owned()).collect();
        row.push(
            fields
                .get(last..)
                .map(|rest| rest.join(" "))
                .unwrap_or_default(),
        );
        processes.push(row);
    }
    Ok((titles, processes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PS: &str = "UID          PID    PPID  C STIME TTY          TIME CMD
root           1       0  0 10:00 ?        00:00:01 /sbin/init
root         420     400  0 10:01 ?        00:00:00 sleep 1000
nobody       421     420  0 10:01 ?        00:00:00 sh -c echo a  b
";

    #[test]
    fn only_the_containers_rows_with_the_command_kept_whole() {
        let (titles, rows) = select(PS, &[420, 421]).unwrap();
        assert_eq!(titles.len(), 8);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0][1], "420");
        assert_eq!(rows[0][7], "sleep 1000");
        assert_eq!(rows[1][7], "sh -c echo a b");
    }

    #[test]
    fn output_without_a_pid_column_is_refused() {
        let err = select("USER COMMAND\nroot init\n", &[1]).unwrap_err();
        assert!(err.message.contains("PID"), "{err}");
    }
}
