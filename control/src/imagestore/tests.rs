//! The image store on a real one-voter store: streamed uploads, manifests and
//! indexes that need what they name, deletion and blob collection, catalog.

use std::time::Duration;

use serde_json::json;

use super::*;
use crate::store::{ReplicaConfig, StoreConfig};

async fn images() -> (tempfile::TempDir, Images) {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let store = Store::start(
        StoreConfig {
            data_dir: dir.path().to_path_buf(),
            peer_addr: format!("127.0.0.1:{port}"),
            peer_tls: crate::store::PeerTls::default(),
            bootstrap: true,
            tick: Duration::from_millis(20),
            replica: ReplicaConfig::default(),
        },
        7,
    )
    .await
    .unwrap();
    for _ in 0..500 {
        if store.status().leader_id != 0 {
            return (dir, Images::new(store));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no leader");
}

fn manifest(config: &[u8], layers: &[&[u8]]) -> Vec<u8> {
    serde_json::to_vec(&json!({"schemaVersion": 2,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest_of(config), "size": config.len()},
        "layers": layers.iter().map(|l| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": digest_of(l), "size": l.len()})).collect::<Vec<_>>()}))
    .unwrap()
}

const M: &str = "application/vnd.oci.image.manifest.v1+json";

#[tokio::test]
async fn uploads_stream_and_deletion_collects_what_nothing_names() {
    let (_dir, images) = images().await;
    // A blob of 3 parts written in odd slices; a wrong digest leaves nothing.
    let big: Vec<u8> = (0..(CHUNK * 2 + 1000)).map(|i| (i % 251) as u8).collect();
    let mut w = images.writer();
    for part in big.chunks(100_000) {
        w.write(part).await.unwrap();
    }
    assert_eq!(w.size(), big.len() as u64);
    w.commit(&digest_of(&big)).await.unwrap();
    assert_eq!(images.get_blob(&digest_of(&big)).await.unwrap(), big);
    let mut w = images.writer();
    w.write(&big).await.unwrap();
    let err = w.commit(&digest_of(b"other")).await.unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    let (left, _) = images
        .store
        .list("/skiff/uploads/", None, 10)
        .await
        .unwrap();
    assert!(left.is_empty());

    let (a, b, c) = (b"config".to_vec(), b"layer b".to_vec(), b"layer c".to_vec());
    for x in [&a, &b, &c] {
        images.put_blob(&digest_of(x), x).await.unwrap();
    }
    let m1 = manifest(&a, &[&b, &big]);
    let m2 = manifest(&a, &[&c]);
    let repo = "docker.io/acc/app";
    let d1 = images.put_manifest(repo, Some("v1"), M, &m1).await.unwrap();
    images
        .put_manifest(repo, Some("v1b"), M, &m1)
        .await
        .unwrap();
    let d2 = images.put_manifest(repo, Some("v2"), M, &m2).await.unwrap();
    // What a manifest or index names must be there.
    let dangling = manifest(b"nothing", &[]);
    assert!(matches!(
        images.put_manifest(repo, Some("x"), M, &dangling).await,
        Err(ImageError::MissingBlob(_))
    ));
    let index = |ds: &[&str]| {
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": ds.iter().map(|d| json!({"mediaType": M, "digest": d, "size": 1})).collect::<Vec<_>>()})).unwrap()
    };
    assert!(matches!(
        images
            .put_manifest(repo, Some("x"), M, &index(&[&digest_of(b"no")]))
            .await,
        Err(ImageError::MissingManifest(_))
    ));
    let di = images
        .put_manifest(
            repo,
            Some("idx"),
            "application/vnd.oci.image.index.v1+json",
            &index(&[&d2]),
        )
        .await
        .unwrap();
    let tags = images.tags(repo).await.unwrap();
    assert_eq!(tags.keys().collect::<Vec<_>>(), ["idx", "v1", "v1b", "v2"]);
    images
        .put_manifest("docker.io/acc/other", Some("v1"), M, &m2)
        .await
        .unwrap();
    assert_eq!(
        images.repositories().await.unwrap(),
        ["docker.io/acc/app", "docker.io/acc/other"]
    );

    // Another tag holds m1: only the tag goes.
    let d = images.delete(repo, "v1").await.unwrap();
    assert_eq!((d.tags.len(), d.manifests.len(), d.blobs), (1, 0, 0));
    // The last tag: m1 and the blobs only it named (b, big) go; a stays.
    let d = images.delete(repo, "v1b").await.unwrap();
    assert_eq!(d.manifests, std::slice::from_ref(&d1));
    assert_eq!(d.blobs, 2);
    assert!(images.has_blob(&digest_of(&b)).await.unwrap().is_none());
    assert!(images.has_blob(&digest_of(&big)).await.unwrap().is_none());
    assert!(images.has_blob(&digest_of(&a)).await.unwrap().is_some());
    // Only the parts of a and c are left.
    let (parts, _) = images
        .store
        .list("/skiff/blobparts/", None, 10)
        .await
        .unwrap();
    assert_eq!(parts.len(), 2);
    // m2 is still reached through the index; deleting the index by digest
    // after v2 takes m2 too, but c is still named in the other repository.
    let d = images.delete(repo, "v2").await.unwrap();
    assert!(d.manifests.is_empty());
    let d = images.delete(repo, &di).await.unwrap();
    assert_eq!(d.tags, ["idx"]);
    assert_eq!(d.manifests.len(), 2);
    assert_eq!(d.blobs, 0);
    assert!(images.get_manifest(repo, &d2).await.is_err());
    assert!(matches!(
        images.delete(repo, "v1").await,
        Err(ImageError::NotFound { .. })
    ));
    assert!(matches!(
        images.tags(repo).await,
        Err(ImageError::NotFound { .. })
    ));
    assert_eq!(
        images.repositories().await.unwrap(),
        ["docker.io/acc/other"]
    );
}
