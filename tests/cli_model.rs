//! The whole command line against a model: a seeded random sequence of real commands on
//! real processes (writes, zeroes, trims and flushes through `serve`; `kill -9` of the
//! server; `snapshot` offline and against the running server; `clone` of the head and
//! of snapshots, beside the source and in another folder; `reset`; `forget`; `gc`;
//! `import` (an image larger than the disk is refused and changes nothing);
//! `push --swap-out` to a folder or to S3 (s3s-fs), beside the source and elsewhere,
//! then writes through the copy (most copies share one small cache folder); servers
//! with a small memtable, so kills land inside checkpoints;
//! `pull`; `export --changed-since` + `apply`; `resize` (a shrink, refused without
//! `--shrink`, then a grow back; of followers too); refs: `push --ref` of a disk's state to a
//! shared folder remote, followers made by `--swap-out` that take each new version when
//! opened and keep their own writes once written, `update`, and `gc` of the remote
//! after the followers with writes of their own `pull`). After every step every disk is read
//! back and compared with an in-memory model byte for byte (through NBD while served,
//! else with `export`, every kept snapshot too); `fsck` runs every 10 steps and at the
//! end.
//!
//! `MINDCASTLE_MODEL_SEED=N` replays a run; `MINDCASTLE_MODEL_STEPS=N` sets its length
//! (CI: 150). `bench/soak.sh` runs it for hours with new seeds.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};

use common::nbd::Nbd;
use common::server::Server;

const SIZE: u64 = 4 << 20;
const MAX_DISKS: usize = 4;
const MAX_SNAPS: usize = 3;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

struct Disk {
    swap: PathBuf,
    model: Vec<u8>,
    /// Kept snapshots this run named, oldest first, with their images.
    snaps: Vec<(String, Vec<u8>)>,
    served: Option<(Server, Nbd)>,
    /// The ref this disk follows (a follower made by `push --ref --swap-out`).
    follows: Option<String>,
    /// A follower that was written: it stays on its own state.
    own: bool,
}

/// The newest image of each ref pushed to the refs folder.
type Refs = std::collections::HashMap<String, Vec<u8>>;

impl Disk {
    /// Serves the disk if it is not served; `small` gives the server a 64-block
    /// memtable, so it checkpoints and merges every few writes (and a `kill -9` often
    /// lands inside a checkpoint).
    fn serve(&mut self, dir: &Path, small: bool, refs: &Refs) -> &mut Nbd {
        if self.served.is_none() {
            // A follower without writes of its own opens at its ref's newest version.
            self.take_newest(refs);
            let env: &[(&str, &str)] = if small {
                &[("MINDCASTLE_MEMTABLE_ENTRIES", "64")]
            } else {
                &[]
            };
            let srv = Server::start_with_env(dir, &self.swap, &[], env);
            let c = Nbd::connect(&srv.socket);
            self.served = Some((srv, c));
        }
        &mut self.served.as_mut().unwrap().1
    }
    fn take_newest(&mut self, refs: &Refs) {
        if let (Some(r), false) = (&self.follows, self.own) {
            self.model = refs[r].clone();
        }
    }
    /// Marks a follower written (its writes keep it off newer versions).
    fn written(&mut self) {
        self.own = self.follows.is_some();
    }
    fn offline(&mut self) {
        if let Some((srv, c)) = self.served.take() {
            drop(c);
            srv.stop();
        }
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn ok(args: &[&str]) -> Vec<u8> {
    let o = common::run(args);
    assert!(
        o.status.success(),
        "mindcastle {args:?}: {:?}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

fn first_diff(a: &[u8], b: &[u8]) -> Option<usize> {
    if a.len() != b.len() {
        return Some(a.len().min(b.len()));
    }
    a.iter().zip(b).position(|(x, y)| x != y)
}

/// Compares the disk (and its snapshots, when offline) with the model; returns the
/// bytes compared.
fn check(d: &mut Disk, fsck: bool, step: usize, refs: &Refs) -> u64 {
    if d.served.is_none() {
        d.take_newest(refs);
    }
    if let Some((_, c)) = &mut d.served {
        let got = c.read(0, SIZE as u32);
        assert!(
            got == d.model,
            "step {step}: {} through NBD differs from the model at byte {:?}",
            d.swap.display(),
            first_diff(&got, &d.model)
        );
        return SIZE;
    }
    let got = ok(&["export", s(&d.swap), "-"]);
    assert!(
        got == d.model,
        "step {step}: {} differs from the model at byte {:?}",
        d.swap.display(),
        first_diff(&got, &d.model)
    );
    for (name, image) in &d.snaps {
        let got = ok(&["export", "--snapshot", name, s(&d.swap), "-"]);
        assert!(
            &got == image,
            "step {step}: {}@{name} differs from the model at byte {:?}",
            d.swap.display(),
            first_diff(&got, image)
        );
    }
    if fsck {
        ok(&["fsck", s(&d.swap)]);
    }
    SIZE * (1 + d.snaps.len() as u64)
}

/// With `MAX_DISKS` disks, stops following one (not `keep`) so clones and pushes go on
/// being made; its files stay where they are (a pushed copy may read through them).
/// Returns where `keep` is now.
fn retire_one_if_full(disks: &mut Vec<Disk>, keep: usize, rng: &mut Rng, refs: &Refs) -> usize {
    if disks.len() < MAX_DISKS {
        return keep;
    }
    let mut k = rng.below(disks.len() as u64 - 1) as usize;
    if k >= keep {
        k += 1;
    }
    let mut d = disks.remove(k);
    d.offline();
    check(&mut d, true, usize::MAX, refs);
    if k < keep {
        keep - 1
    } else {
        keep
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn random_command_sequences_match_the_model() {
    let seed = env_u64("MINDCASTLE_MODEL_SEED", 20261202);
    let steps = env_u64("MINDCASTLE_MODEL_STEPS", 150) as usize;
    eprintln!("cli model: seed {seed}, {steps} steps (MINDCASTLE_MODEL_SEED={seed} replays)");
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let root = tempfile::tempdir().unwrap();
    // Pushes go to a folder or to a real S3 server (s3s-fs); every command this test
    // runs gets its keys through the environment.
    let s3 = common::server::have("s3s-fs").then(|| common::s3::start(&root.path().join("s3")));
    if let Some((_, port)) = &s3 {
        for (k, v) in common::s3::env(*port) {
            std::env::set_var(k, v);
        }
    }
    let folders = [root.path().to_path_buf(), root.path().join("other")];
    let cache = root.path().join("cache");
    std::fs::create_dir_all(&folders[1]).unwrap();
    let first = root.path().join("d0.swap");
    ok(&["create", "--size", &SIZE.to_string(), s(&first)]);
    let mut disks = vec![Disk {
        swap: first,
        model: vec![0u8; SIZE as usize],
        snaps: Vec::new(),
        served: None,
        follows: None,
        own: false,
    }];
    let refs_dir = root.path().join("refs-pub");
    let mut refs = Refs::new();
    // The disk that pushes each ref (its key opens the versions' roots for `gc`).
    let mut ref_sources: Vec<PathBuf> = Vec::new();
    let (mut kills, mut snapshots, mut clones, mut pushes, mut bytes_compared) = (0, 0, 0, 0, 0u64);
    let (mut ref_pushes, mut followers, mut updates, mut ref_gcs) = (0, 0, 0, 0);
    let mut resizes = 0;
    for step in 0..steps {
        let mut i = rng.below(disks.len() as u64) as usize;
        let dir = root.path().to_path_buf();
        let roll = rng.below(100);
        let small = rng.chance(50);
        let what;
        match roll {
            0..=27 => {
                // A write at any alignment, from a byte to 64 KiB.
                let len = if rng.chance(30) {
                    1 + rng.below(4096)
                } else {
                    1 + rng.below(65536)
                };
                let off = rng.below(SIZE - len);
                let data = common::noise(rng.next(), len as usize);
                let d = &mut disks[i];
                d.serve(&dir, small, &refs).write(off, &data);
                d.written();
                d.model[off as usize..(off + len) as usize].copy_from_slice(&data);
                what = format!("write {off}+{len}");
            }
            35..=42 => {
                let len = 1 + rng.below(65536);
                let off = rng.below(SIZE - len);
                let trim = rng.chance(50);
                let d = &mut disks[i];
                let c = d.serve(&dir, small, &refs);
                if trim {
                    c.trim(off, len as u32);
                } else {
                    c.zero(off, len as u32);
                }
                d.written();
                d.model[off as usize..(off + len) as usize].fill(0);
                what = format!("{} {off}+{len}", if trim { "trim" } else { "zero" });
            }
            43..=46 => {
                disks[i].serve(&dir, small, &refs).flush();
                what = "flush".into();
            }
            47..=56 => {
                // kill -9 right after acknowledged writes (no flush): they must survive.
                // A burst first (half the time) fills memtables, so on a small-memtable
                // server the kill lands while checkpoints run.
                let burst = if rng.chance(50) { 8 + rng.below(56) } else { 1 };
                let d = &mut disks[i];
                for _ in 0..burst {
                    let len = 1 + rng.below(16384);
                    let off = rng.below(SIZE - len);
                    let data = common::noise(rng.next(), len as usize);
                    d.serve(&dir, small, &refs).write(off, &data);
                    d.written();
                    d.model[off as usize..(off + len) as usize].copy_from_slice(&data);
                }
                let (srv, c) = d.served.take().unwrap();
                drop(c);
                drop(srv); // SIGKILL
                kills += 1;
                what = format!("{burst} writes, kill -9");
            }
            57 => {
                disks[i].offline();
                what = "stop".into();
            }
            58..=59 => {
                // Shrink (refused without --shrink), dropping what lies past the new
                // end, then grow back: the space reads zeros, snapshots keep theirs. A
                // follower takes its ref's newest version at the first open, and the
                // resize is a state of its own.
                let d = &mut disks[i];
                let to = (1 + rng.below(SIZE / 4096 - 1)) * 4096;
                let held = if d.served.is_some() {
                    " (refused while served first)"
                } else {
                    ""
                };
                if d.served.is_some() {
                    let o = common::run(&["resize", "--shrink", s(&d.swap), &to.to_string()]);
                    assert_eq!(
                        o.status.code(),
                        Some(5),
                        "step {step}: resize of a held disk"
                    );
                }
                d.offline();
                d.take_newest(&refs);
                let o = common::run(&["resize", s(&d.swap), &to.to_string()]);
                assert_eq!(o.status.code(), Some(2), "step {step}: {o:?}");
                ok(&["resize", "--shrink", s(&d.swap), &to.to_string()]);
                ok(&["resize", s(&d.swap), &SIZE.to_string()]);
                d.model[to as usize..].fill(0);
                d.written();
                resizes += 1;
                let whose = if d.follows.is_some() {
                    " (a follower)"
                } else {
                    ""
                };
                what = format!("resize to {to} and back{held}{whose}");
            }
            60..=66 if disks[i].follows.is_none() => {
                let d = &mut disks[i];
                if d.snaps.len() >= MAX_SNAPS {
                    d.offline();
                    let (name, _) = d.snaps.remove(0);
                    ok(&["forget", s(&d.swap), &name]);
                    what = format!("forget {name}");
                } else {
                    let name = format!("s{step}");
                    ok(&["snapshot", "--name", &name, s(&d.swap)]);
                    what = format!(
                        "snapshot {name} ({})",
                        if d.served.is_some() {
                            "served"
                        } else {
                            "offline"
                        }
                    );
                    d.snaps.push((name, d.model.clone()));
                    snapshots += 1;
                }
            }
            67..=72 if disks[i].follows.is_none() => {
                i = retire_one_if_full(&mut disks, i, &mut rng, &refs);
                let folder = &folders[rng.below(2) as usize];
                let new = folder.join(format!("c{step}.swap"));
                let d = &mut disks[i];
                let from_snap = !d.snaps.is_empty() && rng.chance(50);
                let image = if from_snap {
                    let k = rng.below(d.snaps.len() as u64) as usize;
                    let (name, image) = d.snaps[k].clone();
                    ok(&["clone", &format!("{}@{name}", s(&d.swap)), s(&new)]);
                    what = format!("clone @{name} to {}", new.display());
                    image
                } else if d.served.is_some() {
                    let o = common::run(&["clone", s(&d.swap), s(&new)]);
                    assert_eq!(
                        o.status.code(),
                        Some(5),
                        "step {step}: clone of a held head"
                    );
                    assert!(!new.exists());
                    what = "clone of a served head (refused)".into();
                    Vec::new()
                } else {
                    ok(&["clone", s(&d.swap), s(&new)]);
                    what = format!("clone head to {}", new.display());
                    d.model.clone()
                };
                if !image.is_empty() {
                    clones += 1;
                    disks.push(Disk {
                        swap: new,
                        model: image,
                        snaps: Vec::new(),
                        served: None,
                        follows: None,
                        own: false,
                    });
                }
            }
            73..=77 if !disks[i].snaps.is_empty() => {
                let d = &mut disks[i];
                d.offline();
                let k = rng.below(d.snaps.len() as u64) as usize;
                let (name, image) = d.snaps[k].clone();
                ok(&["reset", s(&d.swap), &name]);
                d.model = image;
                what = format!("reset to {name}");
            }
            78..=81 if disks[i].follows.is_none() => {
                let d = &mut disks[i];
                d.offline();
                if rng.chance(50) {
                    ok(&["gc", s(&d.swap)]);
                    what = "gc".into();
                } else {
                    // An image from offset 0; one larger than the disk changes nothing.
                    let len = if rng.chance(10) {
                        SIZE + 4096
                    } else {
                        1 + rng.below(SIZE)
                    };
                    let data = common::noise(rng.next(), len as usize);
                    let img = root.path().join(format!("import{step}.raw"));
                    std::fs::write(&img, &data).unwrap();
                    if len > SIZE {
                        let o = common::run(&["import", s(&d.swap), s(&img)]);
                        assert_eq!(o.status.code(), Some(2), "step {step}: {o:?}");
                        what = format!("import of {len} bytes, refused");
                    } else {
                        ok(&["import", s(&d.swap), s(&img)]);
                        d.model[..len as usize].copy_from_slice(&data);
                        what = format!("import of {len} bytes");
                    }
                    let _ = std::fs::remove_file(&img);
                }
            }
            82..=89 if disks[i].follows.is_none() => {
                i = retire_one_if_full(&mut disks, i, &mut rng, &refs);
                let d = &mut disks[i];
                let dest = if s3.is_some() && rng.chance(35) {
                    format!("s3://bucket/pub{step}")
                } else {
                    s(&root.path().join(format!("pub{step}"))).to_string()
                };
                let served = d.served.is_some();
                if served {
                    // Refused while served (it checkpoints first), leaving nothing.
                    let o = common::run(&["push", s(&d.swap), &dest]);
                    assert_eq!(
                        o.status.code(),
                        Some(5),
                        "step {step}: push of a served disk"
                    );
                    assert!(
                        !root.path().join(format!("pub{step}")).exists(),
                        "step {step}: a refused push made its folder"
                    );
                }
                d.offline();
                let folder = &folders[rng.below(2) as usize];
                let out = folder.join(format!("p{step}.swap"));
                ok(&["push", s(&d.swap), &dest, "--swap-out", s(&out)]);
                what = format!(
                    "push to {dest} --swap-out {}{}",
                    out.display(),
                    if served {
                        " (refused while served first)"
                    } else {
                        ""
                    }
                );
                if rng.chance(70) {
                    // Most copies read through one cache folder that every copy shares.
                    let mut text = std::fs::read_to_string(&out).unwrap();
                    text.push_str(&format!("cache={}\ncachesize=6M\n", s(&cache)));
                    std::fs::write(&out, text).unwrap();
                }
                let copy = Disk {
                    swap: out,
                    model: d.model.clone(),
                    snaps: d.snaps.clone(),
                    served: None,
                    follows: None,
                    own: false,
                };
                pushes += 1;
                disks.push(copy);
            }
            90..=93 if disks[i].follows.is_none() => {
                let d = &mut disks[i];
                d.offline();
                let text = std::fs::read_to_string(&d.swap).unwrap();
                if text.contains("fallback=") {
                    ok(&["pull", s(&d.swap)]);
                    what = "pull".into();
                } else {
                    what = "pull (no fallback)".into();
                }
            }
            94..=99 if !disks[i].snaps.is_empty() => {
                let d = &mut disks[i];
                d.offline();
                let k = rng.below(d.snaps.len() as u64) as usize;
                let (name, image) = d.snaps[k].clone();
                let img = root.path().join(format!("base{step}.img"));
                std::fs::write(&img, &image).unwrap();
                let delta = root.path().join(format!("up{step}.delta"));
                ok(&[
                    "export",
                    "--changed-since",
                    &name,
                    "--format",
                    "stream",
                    s(&d.swap),
                    s(&delta),
                ]);
                ok(&["apply", s(&delta), s(&img)]);
                assert!(
                    std::fs::read(&img).unwrap() == d.model,
                    "step {step}: {name} + the delta differs from the head"
                );
                let _ = std::fs::remove_file(&img);
                let _ = std::fs::remove_file(&delta);
                what = format!("export --changed-since {name} | apply");
            }
            28..=31 if disks[i].follows.is_none() => {
                // push --ref of this disk's state to its own ref; sometimes a follower.
                let d = &mut disks[i];
                d.offline();
                let name = format!("r-{}", d.swap.file_stem().unwrap().to_string_lossy());
                let follower =
                    (disks.len() < MAX_DISKS || !refs.contains_key(&name)) && rng.chance(60);
                if follower {
                    i = retire_one_if_full(&mut disks, i, &mut rng, &refs);
                }
                let d = &mut disks[i];
                let out = folders[rng.below(2) as usize].join(format!("f{step}.swap"));
                let mut args = vec!["push", "--ref", &name, s(&d.swap), s(&refs_dir)];
                if follower {
                    args.extend(["--swap-out", s(&out)]);
                }
                ok(&args);
                if !ref_sources.contains(&d.swap) {
                    ref_sources.push(d.swap.clone());
                }
                refs.insert(name.clone(), d.model.clone());
                ref_pushes += 1;
                followers += usize::from(follower);
                what = format!(
                    "push --ref {name}{}",
                    if follower { " --swap-out" } else { "" }
                );
                if follower {
                    let model = d.model.clone();
                    disks.push(Disk {
                        swap: out,
                        model,
                        snaps: Vec::new(),
                        served: None,
                        follows: Some(name),
                        own: false,
                    });
                }
            }
            32..=33 if disks.iter().any(|d| d.follows.is_some()) => {
                let followers: Vec<usize> = (0..disks.len())
                    .filter(|&k| disks[k].follows.is_some())
                    .collect();
                i = followers[rng.below(followers.len() as u64) as usize];
                let d = &mut disks[i];
                d.offline();
                let o = common::run(&["update", s(&d.swap)]);
                updates += 1;
                if d.own {
                    assert_eq!(
                        o.status.code(),
                        Some(5),
                        "step {step}: update of a follower with writes"
                    );
                } else {
                    assert!(o.status.success(), "step {step}: update: {o:?}");
                    d.take_newest(&refs);
                }
                what = format!(
                    "update ({})",
                    if d.own {
                        "own writes: refused"
                    } else {
                        "moved"
                    }
                );
            }
            34 if !refs.is_empty() => {
                // gc at the refs folder, keeping 2 versions of each ref with no grace:
                // followers go offline, and those with writes of their own pull first
                // (they read the rest from their version, which may go).
                for d in disks.iter_mut().filter(|d| d.follows.is_some()) {
                    d.offline();
                    if d.own {
                        ok(&["pull", s(&d.swap)]);
                    }
                }
                let mut args = vec!["gc", "--keep", "2", "--grace", "0s"];
                for k in &ref_sources {
                    args.extend(["--key-from", s(k)]);
                }
                args.push(s(&refs_dir));
                ok(&args);
                ref_gcs += 1;
                what = "gc of the refs folder".into();
            }
            _ => what = "nothing".into(),
        }
        eprintln!("step {step}: {}: {what}", disks[i].swap.display());
        let fsck = step % 10 == 9;
        for d in &mut disks {
            bytes_compared += check(d, fsck, step, &refs);
        }
    }
    for d in &mut disks {
        d.offline();
        check(d, true, steps, &refs);
    }
    eprintln!(
        "cli model: {steps} steps, {kills} kill -9, {snapshots} snapshots, {clones} clones, \
         {pushes} pushes, {ref_pushes} ref pushes ({followers} followers), {updates} updates, \
         {ref_gcs} gc of the refs folder, {resizes} resizes, {} disks, {bytes_compared} bytes \
         compared, 0 lost",
        disks.len()
    );
}
