//! Who may ask what on the control socket. The socket is open to every local user
//! (so that a refused one is told why); this decides, per connection, from the
//! peer's uid and gid as the kernel recorded them at connect (SO_PEERCRED) and the
//! groups the user database gives that uid (NSS, so LDAP/sssd accounts count):
//!
//! | who | may |
//! |---|---|
//! | root, members of the operators' group (`[control] operators`) | every request |
//! | the service's own user | look: ping, list, show, stats, export |
//! | anyone else | nothing: "permission denied: you are not in plutus-sync-admin" |
//!
//! Group membership is read at each connection, as `id USER` would show it: an
//! account added to the group may use the socket at once, one removed no longer can
//! (a process keeps its groups until it ends, the database does not).

use super::protocol::Request;
use nix::unistd::{getgrouplist, Group, Uid, User};
use plutus_state::Caller;
use std::ffi::CString;

/// What the peer may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// uid 0: everything.
    Root,
    /// A member of the operators' group: everything.
    Operator,
    /// The service's own user: read-only requests.
    Service,
    /// Nobody we know: nothing.
    Other,
}

/// The rules of one running service.
#[derive(Clone, Debug)]
pub struct Access {
    /// The operators' group, by name (resolved at each connection).
    pub operators: String,
    /// The service's effective uid.
    pub service_uid: u32,
}

impl Access {
    pub fn new(operators: &str) -> Access {
        Access {
            operators: operators.to_string(),
            service_uid: rustix::process::geteuid().as_raw(),
        }
    }

    /// Who is at the other end, and what they may do. Blocking: the user database
    /// may be LDAP.
    pub fn who(&self, uid: u32, gid: u32) -> (Role, Caller) {
        let user = User::from_uid(Uid::from_raw(uid)).ok().flatten();
        let caller = Caller {
            uid,
            user: user.as_ref().map(|u| u.name.clone()),
        };
        if uid == 0 {
            return (Role::Root, caller);
        }
        let group = Group::from_name(&self.operators)
            .ok()
            .flatten()
            .map(|g| g.gid);
        let member = group.is_some_and(|admin| {
            // The peer's own (effective) gid counts too: `sg plutus-sync-admin`.
            gid == admin.as_raw()
                || user.as_ref().is_some_and(|u| {
                    CString::new(u.name.as_str())
                        .ok()
                        .and_then(|name| getgrouplist(&name, u.gid).ok())
                        .is_some_and(|groups| groups.contains(&admin))
                })
        });
        let role = if member {
            Role::Operator
        } else if uid == self.service_uid {
            Role::Service
        } else {
            Role::Other
        };
        (role, caller)
    }

    /// `Ok` when `role` may make `req`; otherwise the answer to send back, which
    /// names the group to join.
    pub fn check(&self, role: Role, req: &Request, caller: &Caller) -> Result<(), String> {
        match role {
            Role::Root | Role::Operator => Ok(()),
            Role::Service if req.is_read_only() => Ok(()),
            Role::Service => Err(format!(
                "permission denied: you are not in {}: the service's own user {caller} may only look (list, show, stats, export); {} is for root and members of {}",
                self.operators,
                req.name(),
                self.operators
            )),
            Role::Other => Err(format!(
                "permission denied: you are not in {}; {caller} may not use {}\n  hint: an administrator adds operators with 'adduser USER {}'",
                self.operators,
                req.name(),
                self.operators
            )),
        }
    }
}

/// The user running this process: who replays when the CLI answers from the
/// journal itself (the service is down, so the file system decided who may).
pub fn me() -> Caller {
    let uid = rustix::process::geteuid().as_raw();
    Caller {
        uid,
        user: User::from_uid(Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::protocol::{ListFilter, Selector};
    use nix::unistd::Gid;

    fn replay() -> Request {
        Request::Replay {
            selector: Selector::Failed(None),
            dry_run: false,
            force: true,
            to: None,
        }
    }

    #[test]
    fn root_may_do_everything_the_service_user_only_look_others_nothing() {
        let a = Access {
            operators: "no-such-group-plutus-test".into(),
            service_uid: 4242,
        };
        // No such group: nobody is an operator, root still is root.
        let (role, caller) = a.who(0, 0);
        assert_eq!(role, Role::Root);
        assert_eq!(caller.user.as_deref(), Some("root"));
        assert_eq!(a.who(4242, 4242).0, Role::Service);
        assert_eq!(a.who(4243, 4243).0, Role::Other);
        let c = Caller {
            uid: 4243,
            user: None,
        };
        let stats = Request::Stats;
        let list = Request::List {
            filter: ListFilter::default(),
        };
        assert!(a.check(Role::Root, &replay(), &c).is_ok());
        assert!(a.check(Role::Operator, &replay(), &c).is_ok());
        assert!(a.check(Role::Service, &stats, &c).is_ok());
        assert!(a.check(Role::Service, &list, &c).is_ok());
        let e = a.check(Role::Service, &replay(), &c).unwrap_err();
        assert!(
            e.starts_with("permission denied: you are not in no-such-group-plutus-test"),
            "{e}"
        );
        let e = a.check(Role::Other, &stats, &c).unwrap_err();
        assert!(
            e.starts_with(
                "permission denied: you are not in no-such-group-plutus-test; uid 4243 may not use journal stats"
            ),
            "{e}"
        );
    }

    #[test]
    fn the_peers_own_gid_makes_it_an_operator() {
        // Group 0 (root) exists everywhere; a uid with gid 0 is "in" it.
        let root_group = Group::from_gid(Gid::from_raw(0)).unwrap().unwrap().name;
        let a = Access {
            operators: root_group,
            service_uid: 4242,
        };
        assert_eq!(a.who(4243, 0).0, Role::Operator);
        assert_eq!(a.who(4243, 4243).0, Role::Other);
    }
}
