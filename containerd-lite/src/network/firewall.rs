//! The iptables rules a network needs, set once per network rather than
//! once per container: traffic from the bridge and replies to it pass the
//! FORWARD chain (hosts where dockerd ran drop forwarded traffic by
//! default), and traffic leaving for elsewhere is masqueraded unless the
//! network is internal. This is what dockerd does for docker0; the CNI
//! bridge plugin's `ipMasq` and the `firewall` plugin would do it per
//! container, at some fifteen iptables runs per start.
//!
//! The rules live in two chains of berthd's own, jumped to from the
//! built-in ones:
//!
//! ```text
//! filter FORWARD     -j BERTH-FORWARD
//! filter BERTH-FORWARD -i <bridge> -j ACCEPT
//! filter BERTH-FORWARD -o <bridge> -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
//! nat POSTROUTING    -j BERTH-POSTROUTING
//! nat BERTH-POSTROUTING -s <subnet> ! -o <bridge> -j MASQUERADE
//! ```
//!
//! Rules are checked (`-C`) before they are added, so ensuring them again
//! (after a reboot wiped them, or by a second daemon) adds nothing twice;
//! a network's are checked once per berthd run.

use std::collections::HashSet;
use std::sync::Mutex;

use tokio::process::Command;

use super::store::Network;
use crate::error::Context;
use crate::{Error, Result};

/// berthd's chain in the filter table.
pub const FORWARD_CHAIN: &str = "BERTH-FORWARD";
/// berthd's chain in the nat table.
pub const POSTROUTING_CHAIN: &str = "BERTH-POSTROUTING";

/// One rule: its table, chain and match/target arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub table: &'static str,
    pub chain: &'static str,
    pub args: Vec<String>,
}

/// The rules `network` needs.
pub fn rules(network: &Network) -> Vec<Rule> {
    let bridge = network.bridge.clone();
    let strings = |args: &[&str]| args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
    let mut rules = vec![
        Rule {
            table: "filter",
            chain: FORWARD_CHAIN,
            args: strings(&["-i", &bridge, "-j", "ACCEPT"]),
        },
        Rule {
            table: "filter",
            chain: FORWARD_CHAIN,
            args: strings(&[
                "-o",
                &bridge,
                "-m",
                "conntrack",
                "--ctstate",
                "RELATED,ESTABLISHED",
                "-j",
                "ACCEPT",
            ]),
        },
    ];
    if !network.internal {
        rules.push(Rule {
            table: "nat",
            chain: POSTROUTING_CHAIN,
            args: strings(&[
                "-s",
                &network.subnet.to_string(),
                "!",
                "-o",
                &bridge,
                "-j",
                "MASQUERADE",
            ]),
        });
    }
    rules
}

/// Sets and removes networks' rules; remembers which are set this run.
#[derive(Debug, Default)]
pub struct Firewall {
    ensured: Mutex<HashSet<String>>,
}

impl Firewall {
    /// Makes sure `network`'s rules are in place (once per berthd run).
    pub async fn ensure(&self, network: &Network) -> Result<()> {
        if self.lock().contains(&network.id) {
            return Ok(());
        }
        ensure_chain("filter", FORWARD_CHAIN, "FORWARD").await?;
        ensure_chain("nat", POSTROUTING_CHAIN, "POSTROUTING").await?;
        for rule in rules(network) {
            let mut check = vec!["-t", rule.table, "-C", rule.chain];
            check.extend(rule.args.iter().map(String::as_str));
            if iptables(&check).await.is_ok() {
                continue;
            }
            let mut add = vec!["-t", rule.table, "-A", rule.chain];
            add.extend(rule.args.iter().map(String::as_str));
            iptables(&add)
                .await
                .with_context(|| format!("firewall rules of network {}", network.name))?;
        }
        self.lock().insert(network.id.clone());
        Ok(())
    }

    /// Removes `network`'s rules (see [`remove_rules`]).
    pub async fn remove(&self, network: &Network) {
        remove_rules(network).await;
        self.lock().remove(&network.id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.ensured.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Removes `network`'s rules; those already gone are not an error. The
/// default network's stay for good (as docker0's do): this is for user
/// networks, and for whoever deletes a default network's bridge.
pub async fn remove_rules(network: &Network) {
    for rule in rules(network) {
        let mut delete = vec!["-t", rule.table, "-D", rule.chain];
        delete.extend(rule.args.iter().map(String::as_str));
        // Each rule was added once; a second one would come from a second
        // daemon's ensure and goes with it.
        while iptables(&delete).await.is_ok() {}
    }
}

/// Creates `chain` in `table` if missing, with a jump to it from `from`.
async fn ensure_chain(table: &str, chain: &str, from: &str) -> Result<()> {
    if iptables(&["-t", table, "-nL", chain]).await.is_err() {
        // Another daemon may create it at the same moment: check again.
        if let Err(err) = iptables(&["-t", table, "-N", chain]).await {
            iptables(&["-t", table, "-nL", chain])
                .await
                .map_err(|_| err)?;
        }
    }
    if iptables(&["-t", table, "-C", from, "-j", chain])
        .await
        .is_err()
    {
        iptables(&["-t", table, "-I", from, "-j", chain]).await?;
        // Two daemons checking at once both insert: keep one jump.
        let listed = iptables_output(&["-t", table, "-S", from]).await?;
        let jump = format!("-A {from} -j {chain}");
        let extra = listed
            .lines()
            .filter(|line| *line == jump)
            .count()
            .saturating_sub(1);
        for _ in 0..extra {
            iptables(&["-t", table, "-D", from, "-j", chain]).await?;
        }
    }
    Ok(())
}

/// Runs `iptables -w ARGS`; an error carries its stderr.
async fn iptables(args: &[&str]) -> Result<()> {
    iptables_output(args).await.map(drop)
}

/// Runs `iptables -w ARGS` and returns what it printed.
async fn iptables_output(args: &[&str]) -> Result<String> {
    let output = Command::new("iptables")
        .arg("-w")
        .args(args)
        .output()
        .await
        .context("running iptables")?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(Error::internal(format!(
            "iptables {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::time::SystemTime;

    fn network(internal: bool) -> Network {
        Network {
            id: "cd".repeat(32),
            name: "front".into(),
            driver: "bridge".into(),
            bridge: "br-cdcdcdcdcdcd".into(),
            subnet: "10.9.0.0/24".parse().unwrap(),
            gateway: Ipv4Addr::new(10, 9, 0, 1),
            ip_range: None,
            internal,
            labels: Default::default(),
            options: Default::default(),
            created: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn a_network_forwards_its_bridge_and_masquerades_unless_internal() {
        let open = rules(&network(false));
        assert_eq!(open.len(), 3);
        assert_eq!(open[0].args.join(" "), "-i br-cdcdcdcdcdcd -j ACCEPT");
        assert_eq!(
            open[2].args.join(" "),
            "-s 10.9.0.0/24 ! -o br-cdcdcdcdcdcd -j MASQUERADE"
        );
        assert_eq!((open[2].table, open[2].chain), ("nat", POSTROUTING_CHAIN));
        let internal = rules(&network(true));
        assert!(internal.iter().all(|r| r.table == "filter"), "{internal:?}");
    }
}
