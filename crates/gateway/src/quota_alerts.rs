//! The 80 % quota warning: after a request that reserved, extended or
//! charged a quota, the services answer every quota of the user at or above
//! 80 %; a quota newly there raises a `quota.warning` event and a
//! `quota_nearly_reached` alert, once per episode, and its end resolves
//! both. The user reads the same warnings in `GET /v1/me/usage`.

use datamesh_services::quota::Quota;
use datamesh_services::{Services, UserId};

use crate::events::{Event, EventBus};

/// Publishes what changed in `user`'s warnings (`now`: the services'
/// answer). The user's name is looked up only when something changed.
pub(crate) async fn observe(bus: &EventBus, services: &Services, user: UserId, now: &[Quota]) {
    let changes = bus.quota_changes(user, now);
    if changes.is_empty() {
        return;
    }
    let name = match services.get_user(user).await {
        Ok(Some(u)) => u.name,
        _ => format!("#{user}"),
    };
    for (quota, resolved) in changes {
        bus.publish(Event::QuotaWarning { user: name.clone(), quota: quota.to_string(), resolved });
        bus.publish(Event::Alert {
            severity: "warning".into(),
            code: "quota_nearly_reached".into(),
            message: if resolved {
                format!("user {name} is back under 80 % of their {quota} quota")
            } else {
                format!(
                    "user {name} has used 80 % of their {quota} quota: requests beyond it will be refused; \
                     raise their tier (`datamesh admin user set-tier`) or have them free some"
                )
            },
            resolved,
        });
    }
}
