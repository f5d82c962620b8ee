//! `--user`: started as root, bind the port and the control socket, then become an ordinary user.
//!
//! Only `CAP_NET_BIND_SERVICE` is kept across the switch (keep-caps, then every other capability
//! dropped), so `khttpd-ctl start` after a `stop` can open port 80 again while nothing else of root
//! remains.

use std::collections::HashSet;

use caps::{CapSet, Capability};
use nix::unistd::{setgid, setgroups, setuid, Uid, User};

/// Switches the process to `name`'s user and group. Errors are phrased for the operator.
pub(crate) fn drop_to(name: &str) -> Result<(), String> {
    let user = User::from_name(name)
        .map_err(|e| format!("cannot look up user {name:?}: {e}"))?
        .ok_or_else(|| format!("no user named {name:?}"))?;
    if Uid::effective() == user.uid {
        return Ok(());
    }
    if !Uid::effective().is_root() {
        return Err(format!(
            "switching to {name:?} needs root; start as root or drop --user"
        ));
    }
    // Keep the permitted set across setuid so the bind capability survives it.
    let keep = caps::securebits::set_keepcaps(true).is_ok();
    setgroups(&[user.gid]).map_err(|e| format!("setgroups: {e}"))?;
    setgid(user.gid).map_err(|e| format!("setgid: {e}"))?;
    setuid(user.uid).map_err(|e| format!("setuid: {e}"))?;
    if keep {
        let only_bind: HashSet<Capability> =
            [Capability::CAP_NET_BIND_SERVICE].into_iter().collect();
        let kept = caps::set(None, CapSet::Permitted, &only_bind)
            .and_then(|()| caps::set(None, CapSet::Effective, &only_bind));
        if let Err(e) = kept {
            tracing::warn!(error = %e, "cannot keep CAP_NET_BIND_SERVICE; `start` after `stop` needs a port above 1023");
        }
    }
    tracing::info!(
        user = name,
        uid = user.uid.as_raw(),
        gid = user.gid.as_raw(),
        "privileges dropped"
    );
    Ok(())
}
