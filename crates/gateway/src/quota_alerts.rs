//! The 80 % quota warning: after a request that reserved, extended or
//! charged a quota, the services answer every quota of the user at or above
//! 80 %; a quota newly there raises a `quota.warning` event and a
//! `quota_nearly_reached` alert, once per episode, and its end resolves
//! both. The user reads the same warnings in `GET /v1/me/usage`.

use datamesh_services::quota::{Quota, QuotaError, Reservation};
use datamesh_services::{Principal, Services, UserId};

use crate::events::{Event, EventBus};

/// Charges a download of `bytes` to `who`, before a byte of it is served,
/// and publishes what changed in their warnings: the one way a route
/// charges a download, so none can charge without warning.
pub(crate) async fn charge_download(
    bus: &EventBus,
    services: &Services,
    who: &Principal,
    bytes: u64,
) -> Result<(), QuotaError> {
    let now = services.charge_download(who, bytes).await?;
    observe(bus, services, who.user(), &now).await;
    Ok(())
}

/// [`charge_download`] to `owner`, for a download by someone not signed
/// in as them (a share link's visitor).
pub(crate) async fn charge_owner_download(
    bus: &EventBus,
    services: &Services,
    owner: UserId,
    bytes: u64,
) -> Result<(), QuotaError> {
    let now = services.charge_owner_download(owner, bytes).await?;
    observe(bus, services, owner, &now).await;
    Ok(())
}

/// Reserves `bytes` and `files` of `user`'s quotas for an upload and
/// publishes what changed in their warnings.
pub(crate) async fn reserve(
    bus: &EventBus,
    services: &Services,
    user: UserId,
    bytes: u64,
    files: u64,
) -> Result<Reservation, QuotaError> {
    let r = services.reserve(user, bytes, files).await?;
    observe(bus, services, user, &r.warnings).await;
    Ok(r)
}

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
