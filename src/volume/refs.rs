//! Refs at a remote: named, sequenced versions of a disk (`push --ref`, `log --ref`,
//! `ref=` in a `.swap`). Byte layout in [`crate::format::ref_version`].
//!
//! Version N of ref R is the create-only object `refs/R/<N, 20 digits>`; creating N+1
//! is the commit point, so of two pushers racing for N+1 exactly one wins and the other
//! finds N+1 taken and looks again. `refs/R/HEAD` holds a copy of the newest version's
//! bytes: a hint, never trusted on its own: a reader takes HEAD, then asks for the
//! version after it (absent: HEAD is the newest; two round trips), and otherwise walks
//! forward by doubling steps and a binary search, so no step needs a listing (which a
//! plain HTTP server cannot give) and a stale HEAD costs only a few more requests.
//!
//! Every version names the hash of the one before it, so the history is a chain that
//! `log --ref` checks; a signed version also binds its ref name, disk and seq.

use std::sync::Arc;

use serde::Serialize;

use crate::error::{Error, ErrorKind, Result};
use crate::format::ref_version::{object_name, seq_of, RefVersion};
use crate::format::root::RootRef;
use crate::store::refs::{answer_maybe_lost, FolderRefs, RefStore};
use crate::store::remote::RemoteStore;
use crate::store::stack::{classify, FallbackKind};

use super::signing::{public_key_text, signature_holds, Signer};

/// Attempts at creating the next version before giving up (each lost race looks again).
const PUBLISH_ATTEMPTS: usize = 64;

/// The object holding the hint of ref `name`'s newest version.
fn head_name(name: &str) -> String {
    format!("refs/{name}/HEAD")
}

/// The refs of a folder or URL (a `fallback=` value or a push destination);
/// relative folders are taken from `base_dir`.
pub fn open_refs(spec: &str, base_dir: &std::path::Path) -> Result<Arc<dyn RefStore>> {
    Ok(match classify(spec, base_dir) {
        FallbackKind::Folder(dir) => Arc::new(FolderRefs::new(&dir)),
        FallbackKind::Remote(url) => Arc::new(RemoteStore::open(&url)?),
    })
}

/// A version as read, with its exact bytes (the next version hashes them).
#[derive(Clone, Debug)]
pub struct Found {
    /// The decoded version.
    pub version: RefVersion,
    /// Its stored bytes.
    pub bytes: Vec<u8>,
}

/// Version `seq` of ref `name`, when present; Corrupt when the object is not a version
/// of that ref at that seq (a version copied under another name).
pub fn get_version(refs: &dyn RefStore, name: &str, seq: u64) -> Result<Option<Found>> {
    let obj = object_name(name, seq);
    let Some(bytes) = refs.get(&obj)? else {
        return Ok(None);
    };
    let what = format!("{}/{obj}", refs.describe());
    let version = RefVersion::decode(&bytes, &what)?;
    if version.seq != seq || version.name != name {
        return Err(Error::corrupt(format!(
            "{what}: holds version {} of ref '{}', not version {seq} of '{name}'",
            version.seq, version.name
        )));
    }
    Ok(Some(Found { version, bytes }))
}

/// The HEAD hint, when present and well formed (a damaged hint is only logged).
fn head_hint(refs: &dyn RefStore, name: &str) -> Result<Option<Found>> {
    let Some(bytes) = refs.get(&head_name(name))? else {
        return Ok(None);
    };
    match RefVersion::decode(&bytes, "HEAD") {
        Ok(version) if version.name == name => Ok(Some(Found { version, bytes })),
        Ok(_) | Err(_) => {
            tracing::warn!(remote = %refs.describe(), r#ref = name, "HEAD hint is damaged or names another ref; looking without it");
            Ok(None)
        }
    }
}

/// The newest version of ref `name`, at or after `floor` (0: any). With
/// `authoritative`, the result is always read from its own create-only object (a
/// writer chains the next version to those exact bytes); otherwise a HEAD hint with
/// nothing after it is taken as it is (a reader checks what it takes anyway).
pub fn newest(
    refs: &dyn RefStore,
    name: &str,
    floor: u64,
    authoritative: bool,
) -> Result<Option<Found>> {
    // A start that exists: the hint, the floor, version 1, or (when old versions were
    // removed) the largest a listing shows.
    let mut start = head_hint(refs, name)?.filter(|h| h.version.seq >= floor);
    if let Some(h) = &start {
        if authoritative {
            start = get_version(refs, name, h.version.seq)?;
        }
    }
    if start.is_none() {
        start = get_version(refs, name, floor.max(1))?;
    }
    if start.is_none() {
        let listed = match refs.list_dir(&format!("refs/{name}")) {
            Ok(names) => names.iter().filter_map(|n| seq_of(n)).max(),
            // A reader of a plain HTTP server has no listing; a writer never guesses (a
            // wrong "no versions" would start the history again at 1).
            Err(e) if !authoritative => {
                tracing::debug!(error = %e, "no listing here");
                None
            }
            Err(e) => return Err(e),
        };
        if let Some(seq) = listed.filter(|s| *s >= floor) {
            start = get_version(refs, name, seq)?;
        }
    }
    let Some(mut best) = start else {
        return Ok(None);
    };
    // Gallop: best exists; probe best+1, +2, +4, ... until one is absent.
    let mut step = 1u64;
    let absent = loop {
        let probe = best.version.seq.saturating_add(step);
        match get_version(refs, name, probe)? {
            Some(f) => {
                best = f;
                step = step.saturating_mul(2);
            }
            None => break probe,
        }
    };
    // Binary search in (best, absent): versions are created in order, so every seq up
    // to the newest is present (removal takes the oldest first).
    let mut hi = absent;
    while hi - best.version.seq > 1 {
        let mid = best.version.seq + (hi - best.version.seq) / 2;
        match get_version(refs, name, mid)? {
            Some(f) => best = f,
            None => hi = mid,
        }
    }
    Ok(Some(best))
}

/// What a reader accepts.
pub struct Trust<'a> {
    /// The ref followed.
    pub name: &'a str,
    /// Public keys whose signatures are accepted; empty: unsigned versions are taken.
    pub keys: &'a [[u8; 32]],
    /// The disk whose versions are accepted (`origin=`).
    pub origin: Option<[u8; 16]>,
    /// The oldest version accepted (`refseq=`: the newest already taken).
    pub floor: u64,
}

impl Trust<'_> {
    /// Refuses (Corrupt: exit 3) a version this reader must not take; `what` names it.
    pub fn check(&self, v: &RefVersion, what: &str) -> Result<()> {
        let refuse = |why: String| Err(Error::corrupt(format!("{what}: refused: {why}")));
        if v.name != self.name {
            return refuse(format!(
                "it is a version of ref '{}', not '{}'",
                v.name, self.name
            ));
        }
        if v.signature.is_some() && !signature_holds(v) {
            return refuse("its signature does not verify".into());
        }
        if !self.keys.is_empty() {
            match &v.signature {
                None => {
                    return refuse(
                        "it is unsigned, and this disk trusts only signed versions".into(),
                    )
                }
                Some(s) if !self.keys.contains(&s.public_key) => {
                    return refuse(format!(
                        "it is signed by {}, which this disk does not trust",
                        public_key_text(&s.public_key)
                    ))
                }
                Some(_) => {}
            }
        }
        if let Some(o) = self.origin {
            if v.disk_uuid != o {
                return refuse(format!(
                    "it was pushed by disk {}, and this disk follows {}",
                    uuid::Uuid::from_bytes(v.disk_uuid),
                    uuid::Uuid::from_bytes(o)
                ));
            }
        }
        if v.seq < self.floor {
            return refuse(format!(
                "it is version {}, older than version {} this disk already took (a rollback)",
                v.seq, self.floor
            ));
        }
        // Another size is a resize at the source (`resize`), which a follower takes with
        // the version; a size no disk can have is damage.
        if let Some(why) = crate::format::swapfile::bad_disk_size(v.disk_size) {
            return refuse(format!("it names a disk of {} bytes ({why})", v.disk_size));
        }
        Ok(())
    }
}

/// What `push --ref` asks for.
pub struct Publish<'a> {
    /// The ref.
    pub name: &'a str,
    /// The state to name.
    pub root: RootRef,
    /// The disk's size.
    pub disk_size: u64,
    /// The pushing disk.
    pub disk_uuid: [u8; 16],
    /// Free text.
    pub message: &'a str,
    /// Signs the version.
    pub signer: Option<&'a Signer>,
    /// The version this disk last knew of the ref (its last push or pull of it).
    pub base: Option<u64>,
    /// Replace whatever the ref names.
    pub force: bool,
    /// Milliseconds since the epoch (injected so tests replay).
    pub now_ms: u64,
}

/// The result of a publish.
#[derive(Debug, Clone, Serialize)]
pub struct Published {
    /// The ref.
    #[serde(rename = "ref")]
    pub name: String,
    /// The version that now names the state.
    pub seq: u64,
    /// The version it follows (0: none).
    pub previous_seq: u64,
    /// False when the ref already named this state (nothing was written).
    pub created: bool,
    /// The root, hex.
    pub root: String,
    /// The signer's public key, when signed.
    pub signed_by: Option<String>,
    /// Requests that raced with this one and lost to another pusher.
    pub lost_races: usize,
}

/// Records a new version of `p.name` naming `p.root`, after the ref's newest; refuses
/// (Busy: exit 5) when the ref moved past `p.base` unless `p.force`.
pub fn publish(refs: &dyn RefStore, p: &Publish<'_>) -> Result<Published> {
    crate::format::ref_version::check_name(p.name)?;
    let mut lost_races = 0;
    for _ in 0..PUBLISH_ATTEMPTS {
        let current = newest(refs, p.name, 0, true)?;
        if let Some(c) = &current {
            if c.version.root == p.root {
                return Ok(Published {
                    name: p.name.into(),
                    seq: c.version.seq,
                    previous_seq: c.version.seq.saturating_sub(1),
                    created: false,
                    root: p.root.id.to_hex(),
                    signed_by: c.version.signature.map(|s| public_key_text(&s.public_key)),
                    lost_races,
                });
            }
            if !p.force && p.signer.is_none() && c.version.signature.is_some() {
                return Err(Error::invalid(format!(
                    "ref '{}' at {}: its version {} is signed, and readers that trust its \
                     key refuse an unsigned one; sign this one (--sign KEY), or --force",
                    p.name,
                    refs.describe(),
                    c.version.seq
                )));
            }
            // The newest version is this disk's own (its push was killed before it
            // noted the version): it follows from it.
            let own = c.version.disk_uuid == p.disk_uuid;
            if !p.force && !own && p.base != Some(c.version.seq) {
                let known = match p.base {
                    Some(b) => format!("this disk last knew version {b}"),
                    None => "this disk never pushed or pulled it".into(),
                };
                return Err(Error::new(
                    ErrorKind::Busy,
                    format!(
                        "non-fast-forward: ref '{}' at {} is at version {} (root {}), and {known}; \
                         pushing root {} would replace it (use --force to do that)",
                        p.name,
                        refs.describe(),
                        c.version.seq,
                        c.version.root.id,
                        p.root.id
                    ),
                ));
            }
        }
        let (seq, previous) = match &current {
            Some(c) => (
                c.version.seq + 1,
                crate::format::chunk_id::ChunkId::of(&c.bytes).0,
            ),
            None => (1, [0u8; 32]),
        };
        let mut v = RefVersion {
            seq,
            previous,
            root: p.root,
            disk_size: p.disk_size,
            disk_uuid: p.disk_uuid,
            time_ms: p.now_ms,
            name: p.name.into(),
            message: p.message.into(),
            signature: None,
        };
        if let Some(s) = p.signer {
            s.sign(&mut v);
        }
        let bytes = v.encode();
        let obj = object_name(p.name, seq);
        let won = match refs.create(&obj, &bytes) {
            Ok(true) => true,
            // Taken: by another pusher, or by this one when an earlier try's answer
            // was lost (the store's own retry then finds its own object).
            Ok(false) => refs.get(&obj)?.as_deref() == Some(&bytes[..]),
            Err(e) if answer_maybe_lost(&e) => {
                tracing::warn!(error = %e, object = %obj, "no answer to creating the version; reading it back");
                match refs.get(&obj)? {
                    Some(b) => b == bytes,
                    None => return Err(e.context(format!("ref '{}' was not moved", p.name))),
                }
            }
            Err(e) => return Err(e),
        };
        if !won {
            lost_races += 1;
            tracing::info!(
                r#ref = p.name,
                seq,
                "another pusher made this version first; looking again"
            );
            continue;
        }
        // The hint only speeds readers up; a failure to write it loses nothing.
        if let Err(e) = refs.put(&head_name(p.name), &bytes) {
            tracing::warn!(error = %e, "ref moved, but its HEAD hint was not updated");
        }
        return Ok(Published {
            name: p.name.into(),
            seq,
            previous_seq: seq - 1,
            created: true,
            root: p.root.id.to_hex(),
            signed_by: v.signature.map(|s| public_key_text(&s.public_key)),
            lost_races,
        });
    }
    Err(Error::new(
        ErrorKind::Busy,
        format!(
            "ref '{}' at {}: lost the race to other pushers {PUBLISH_ATTEMPTS} times; try again",
            p.name,
            refs.describe()
        ),
    ))
}

/// Every version of ref `name` still at the remote, newest first, checking that each
/// names the hash of the one before it. Stops at the first version that is gone
/// (removed by a collection).
pub fn history(refs: &dyn RefStore, name: &str) -> Result<Vec<RefVersion>> {
    crate::format::ref_version::check_name(name)?;
    let Some(top) = newest(refs, name, 0, true)? else {
        return Err(Error::not_found(format!(
            "{}: no ref '{name}'",
            refs.describe()
        )));
    };
    let mut out = vec![top.version];
    while let Some(last) = out.last() {
        let seq = last.seq;
        if seq <= 1 {
            break;
        }
        let Some(prev) = get_version(refs, name, seq - 1)? else {
            break;
        };
        if crate::format::chunk_id::ChunkId::of(&prev.bytes).0 != last.previous {
            return Err(Error::corrupt(format!(
                "{}: ref '{name}': version {seq} does not follow version {} as stored (the \
                 history was rewritten)",
                refs.describe(),
                seq - 1
            )));
        }
        out.push(prev.version);
    }
    Ok(out)
}

/// The file in a data folder noting, per destination and ref, the version this disk
/// last pushed (its "remote-tracking" knowledge, what fast-forward is judged by).
const TRACKING_FILE: &str = "refs-pushed.json";

type Tracking = std::collections::BTreeMap<String, u64>;

fn tracking_key(dest: &str, name: &str) -> String {
    format!("{dest} {name}")
}

fn read_tracking(dir: &std::path::Path) -> Result<Tracking> {
    let path = dir.join(TRACKING_FILE);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| Error::corrupt(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Tracking::new()),
        Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
    }
}

/// What `push --ref` is told besides the destination.
pub struct RefPush<'a> {
    /// The ref.
    pub name: &'a str,
    /// Free text.
    pub message: &'a str,
    /// Signs the version.
    pub signer: Option<&'a Signer>,
    /// Replace whatever the ref names.
    pub force: bool,
}

impl super::Volume {
    /// Names this disk's current root (already pushed to `dest`) as the next version of
    /// a ref there. Fast-forward is judged by what this disk last knew of the ref: the
    /// version it last pushed there, or, for a disk following the ref at `dest`, its
    /// `refseq=`.
    pub fn publish_ref(
        &self,
        dest: &super::sync::Destination,
        p: &RefPush<'_>,
    ) -> Result<Published> {
        let root = self.root_ref()?.ok_or_else(|| {
            Error::invalid("the disk has no state to name yet (nothing was ever written to it)")
        })?;
        let swap = super::read_swap(self.swap_path())?;
        let dest_line = dest.fallback_line()?;
        let key = tracking_key(&dest_line, p.name);
        let mut tracking = read_tracking(self.data_dir())?;
        let pushed = tracking.get(&key).copied();
        let base_dir = super::disk_files::base_dir(self.swap_path());
        let follows_here = swap.follow.as_deref() == Some(p.name)
            && swap.ref_seq > 0
            && swap.fallbacks.iter().any(|f| {
                match (classify(f, &base_dir), classify(&dest_line, &base_dir)) {
                    (FallbackKind::Folder(a), FallbackKind::Folder(b)) => {
                        std::fs::canonicalize(a).ok() == std::fs::canonicalize(b).ok()
                    }
                    (a, b) => a == b,
                }
            });
        let followed = follows_here.then_some(swap.ref_seq);
        let base = pushed.max(followed);
        let uuid = uuid::Uuid::parse_str(self.uuid())
            .map_err(|e| Error::invalid(format!("disk uuid {}: {e}", self.uuid())))?;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let published = publish(
            dest.refs(),
            &Publish {
                name: p.name,
                root,
                disk_size: self.size(),
                disk_uuid: *uuid.as_bytes(),
                message: p.message,
                signer: p.signer,
                base,
                force: p.force,
                now_ms,
            },
        )?;
        tracking.insert(key, published.seq);
        let text =
            serde_json::to_string_pretty(&tracking).map_err(|e| Error::internal(e.to_string()))?;
        super::disk_files::write_atomic(&self.data_dir().join(TRACKING_FILE), &text)?;
        Ok(published)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::chunk_id::ChunkId;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;

    /// Refs in memory; `lose_after` makes the next N creates act and then answer with
    /// an error (a timeout after the write), `fail_before` fail without acting.
    #[derive(Default)]
    struct MemRefs {
        objects: Mutex<HashMap<String, Vec<u8>>>,
        lose_after: AtomicU32,
        fail_before: AtomicU32,
    }

    fn take(n: &AtomicU32) -> bool {
        n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
            .is_ok()
    }

    impl RefStore for MemRefs {
        fn create(&self, name: &str, bytes: &[u8]) -> Result<bool> {
            if take(&self.fail_before) {
                return Err(Error::new(ErrorKind::Unavailable, "timed out (not sent)"));
            }
            let created = {
                let mut o = self.objects.lock().map_err(|_| Error::internal("lock"))?;
                if o.contains_key(name) {
                    false
                } else {
                    o.insert(name.into(), bytes.to_vec());
                    true
                }
            };
            if take(&self.lose_after) {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    "timed out (answer lost)",
                ));
            }
            Ok(created)
        }
        fn get(&self, name: &str) -> Result<Option<Vec<u8>>> {
            Ok(self
                .objects
                .lock()
                .map_err(|_| Error::internal("lock"))?
                .get(name)
                .cloned())
        }
        fn put(&self, name: &str, bytes: &[u8]) -> Result<()> {
            self.objects
                .lock()
                .map_err(|_| Error::internal("lock"))?
                .insert(name.into(), bytes.to_vec());
            Ok(())
        }
        fn delete(&self, name: &str) -> Result<()> {
            self.objects
                .lock()
                .map_err(|_| Error::internal("lock"))?
                .remove(name);
            Ok(())
        }
        fn list_dir(&self, dir: &str) -> Result<Vec<String>> {
            let prefix = format!("{dir}/");
            Ok(self
                .objects
                .lock()
                .map_err(|_| Error::internal("lock"))?
                .keys()
                .filter_map(|k| k.strip_prefix(&prefix))
                .filter(|k| !k.contains('/'))
                .map(str::to_string)
                .collect())
        }
        fn list_meta(&self, dir: &str) -> Result<Vec<crate::store::refs::Listed>> {
            Ok(self
                .objects
                .lock()
                .map_err(|_| Error::internal("lock"))?
                .iter()
                .filter(|(k, _)| dir.is_empty() || k.starts_with(&format!("{dir}/")))
                .map(|(k, v)| crate::store::refs::Listed {
                    name: k.clone(),
                    size: v.len() as u64,
                    modified_ms: 0,
                })
                .collect())
        }
        fn describe(&self) -> String {
            "memory".into()
        }
    }

    fn root(n: u64) -> RootRef {
        let mut id = [0u8; 32];
        id[..8].copy_from_slice(&n.to_le_bytes());
        RootRef {
            id: ChunkId(id),
            size: 100,
            tag: [1; 16],
        }
    }

    fn push(refs: &dyn RefStore, n: u64, base: Option<u64>, force: bool) -> Result<Published> {
        publish(
            refs,
            &Publish {
                name: "main",
                root: root(n),
                disk_size: 1 << 20,
                disk_uuid: [n as u8; 16],
                message: "",
                signer: None,
                base,
                force,
                now_ms: n,
            },
        )
    }

    #[test]
    fn fast_forward_only_unless_forced() -> Result<()> {
        let refs = MemRefs::default();
        assert_eq!(push(&refs, 1, None, false)?.seq, 1);
        assert_eq!(push(&refs, 2, Some(1), false)?.seq, 2);
        let e = push(&refs, 3, Some(1), false)
            .err()
            .map(|e| (e.kind(), e.to_string()));
        let (kind, msg) = e.unwrap_or((ErrorKind::Internal, String::new()));
        assert_eq!(kind, ErrorKind::Busy);
        assert!(
            msg.contains("non-fast-forward") && msg.contains(&root(2).id.to_hex()),
            "{msg}"
        );
        assert!(msg.contains(&root(3).id.to_hex()), "{msg}");
        let again = push(&refs, 2, None, false)?;
        assert!(
            !again.created && again.seq == 2,
            "the same root makes no version"
        );
        assert_eq!(push(&refs, 3, None, true)?.seq, 3);
        // A disk whose newest version is its own follows it even when it did not note
        // it (a push killed between making the version and noting it).
        let mut own = Publish {
            name: "main",
            root: root(4),
            disk_size: 1 << 20,
            disk_uuid: [3; 16],
            message: "",
            signer: None,
            base: Some(1),
            force: false,
            now_ms: 4,
        };
        assert_eq!(publish(&refs, &own)?.seq, 4);
        own.disk_uuid = [9; 16];
        own.root = root(5);
        assert!(publish(&refs, &own).is_err(), "another disk does not");
        let h = history(&refs, "main")?;
        assert_eq!(
            h.iter().map(|v| v.seq).collect::<Vec<_>>(),
            vec![4, 3, 2, 1]
        );
        Ok(())
    }

    #[test]
    fn a_lost_answer_is_told_from_a_lost_write() -> Result<()> {
        let refs = MemRefs::default();
        push(&refs, 1, None, false)?;
        // Created, then the answer lost: the push reports the version it made.
        refs.lose_after.store(1, Ordering::SeqCst);
        let p = push(&refs, 2, Some(1), false)?;
        assert!(p.created && p.seq == 2);
        assert_eq!(
            newest(&refs, "main", 0, true)?.map(|f| f.version.root),
            Some(root(2))
        );
        // Not sent: the push fails and the ref stays.
        refs.fail_before.store(1, Ordering::SeqCst);
        let e = push(&refs, 3, Some(2), false)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("was not moved"), "{e}");
        assert_eq!(
            newest(&refs, "main", 0, true)?.map(|f| f.version.seq),
            Some(2)
        );
        Ok(())
    }

    #[test]
    fn newest_is_found_with_a_stale_or_missing_hint() -> Result<()> {
        let refs = MemRefs::default();
        for n in 1..=37 {
            push(&refs, n, Some(n - 1).filter(|s| *s > 0), false)?;
        }
        let hint = refs.get("refs/main/HEAD")?;
        let v5 = refs.get(&object_name("main", 5))?;
        refs.put("refs/main/HEAD", v5.as_deref().unwrap_or_default())?;
        assert_eq!(
            newest(&refs, "main", 0, false)?.map(|f| f.version.seq),
            Some(37)
        );
        refs.delete("refs/main/HEAD")?;
        assert_eq!(
            newest(&refs, "main", 0, false)?.map(|f| f.version.seq),
            Some(37)
        );
        assert_eq!(
            newest(&refs, "main", 30, true)?.map(|f| f.version.seq),
            Some(37)
        );
        // Old versions removed: the listing finds a start.
        for n in 1..=20 {
            refs.delete(&object_name("main", n))?;
        }
        assert_eq!(
            newest(&refs, "main", 0, true)?.map(|f| f.version.seq),
            Some(37)
        );
        refs.put("refs/main/HEAD", hint.as_deref().unwrap_or_default())?;
        assert_eq!(history(&refs, "main")?.len(), 17);
        assert!(newest(&refs, "other", 0, false)?.is_none());
        Ok(())
    }

    #[test]
    fn a_rewritten_history_is_caught() -> Result<()> {
        let refs = MemRefs::default();
        for n in 1..=3 {
            push(&refs, n, Some(n - 1).filter(|s| *s > 0), false)?;
        }
        let mut v2 =
            RefVersion::decode(&refs.get(&object_name("main", 2))?.unwrap_or_default(), "t")?;
        v2.message = "rewritten".into();
        refs.put(&object_name("main", 2), &v2.encode())?;
        let e = history(&refs, "main")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("does not follow"), "{e}");
        // A version stored under another seq is refused.
        refs.put(&object_name("main", 4), &v2.encode())?;
        assert_eq!(
            newest(&refs, "main", 0, true).err().map(|e| e.kind()),
            Some(ErrorKind::Corrupt)
        );
        Ok(())
    }

    /// Pushers racing on one store: each round every pusher tries once from the same
    /// base; exactly one wins without --force, and with --force all land, in a chain.
    fn race(refs: &(dyn RefStore + Sync), rounds: u64, pushers: u64) -> Result<()> {
        let mut seq = 0u64;
        for round in 0..rounds {
            let base = (seq > 0).then_some(seq);
            let force = round % 2 == 1;
            let results: Vec<Result<Published>> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..pushers)
                    .map(|p| {
                        let n = 1000 + round * pushers + p;
                        s.spawn(move || push(refs, n, base, force))
                    })
                    .collect();
                hs.into_iter()
                    .map(|h| {
                        h.join()
                            .unwrap_or_else(|_| Err(Error::internal("panicked")))
                    })
                    .collect()
            });
            let won: Vec<&Published> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
            if force {
                assert_eq!(won.len() as u64, pushers, "round {round}: {results:?}");
            } else {
                assert_eq!(won.len(), 1, "round {round}: {results:?}");
                for r in &results {
                    if let Err(e) = r {
                        assert_eq!(e.kind(), ErrorKind::Busy, "{e}");
                    }
                }
            }
            let mut seqs: Vec<u64> = won.iter().map(|p| p.seq).collect();
            seqs.sort_unstable();
            let expect: Vec<u64> = (seq + 1..=seq + won.len() as u64).collect();
            assert_eq!(
                seqs, expect,
                "round {round}: versions are consecutive, none twice"
            );
            seq += won.len() as u64;
        }
        let h = history(refs, "main")?;
        assert_eq!(h.len() as u64, seq);
        let mut roots: Vec<_> = h.iter().map(|v| v.root.id).collect();
        roots.sort_unstable();
        roots.dedup();
        assert_eq!(roots.len() as u64, seq, "no version lost or written twice");
        Ok(())
    }

    #[test]
    fn pushers_racing_on_a_folder_make_one_chain() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        race(&FolderRefs::new(dir.path()), 100, 3)
    }

    #[test]
    fn pushers_racing_on_an_object_store_make_one_chain() -> Result<()> {
        // object_store's in-memory store: PutMode::Create is atomic there, as at S3.
        let store = RemoteStore::open("memory:///refs-test")?;
        race(&store, 100, 3)
    }
}
