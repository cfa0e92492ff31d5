//! Public encryption keys published for sharing.

use datamesh_services::enckeys::EncryptionAlgorithm;
use datamesh_services::keylogin::PublicKeyError;

use crate::common::Env;

crate::both!(encryption_keys_are_published_for_others_to_read);

async fn encryption_keys_are_published_for_others_to_read(env: &Env) {
    let alice = env.user("alice").await;
    let bob = env.user("bob").await;
    let x = env.svc.publish_encryption_key(&alice, alice.user(), EncryptionAlgorithm::X25519, &[7; 32]).await;
    let x = x.expect("x25519");
    let pq = env.svc.publish_encryption_key(&alice, alice.user(), EncryptionAlgorithm::XWing, &[8; 1216]).await;
    let pq = pq.expect("x-wing");
    // Anyone authenticated reads them, to share with alice.
    assert_eq!(env.svc.encryption_keys(&bob, alice.user()).await.expect("read"), vec![x.clone(), pq.clone()]);
    for (alg, key) in [
        (EncryptionAlgorithm::X25519, vec![0u8; 32]),
        (EncryptionAlgorithm::X25519, vec![1u8; 31]),
        (EncryptionAlgorithm::XWing, vec![1u8; 32]),
        (EncryptionAlgorithm::X25519, vec![1u8; 10 << 20]),
    ] {
        let r = env.svc.publish_encryption_key(&alice, alice.user(), alg, &key).await;
        assert!(matches!(r, Err(PublicKeyError::InvalidKey)), "{r:?}");
    }
    let r = env.svc.publish_encryption_key(&alice, alice.user(), EncryptionAlgorithm::X25519, &[7; 32]).await;
    assert!(matches!(r, Err(PublicKeyError::Taken)), "{r:?}");
    let r = env.svc.publish_encryption_key(&bob, alice.user(), EncryptionAlgorithm::X25519, &[9; 32]).await;
    assert!(matches!(r, Err(PublicKeyError::NotPermitted)), "{r:?}");
    assert!(matches!(env.svc.remove_encryption_key(&bob, bob.user(), x.id).await, Err(PublicKeyError::NotFound)));
    env.svc.remove_encryption_key(&alice, alice.user(), x.id).await.expect("remove");
    assert_eq!(env.svc.encryption_keys(&bob, alice.user()).await.expect("read"), vec![pq]);
}
