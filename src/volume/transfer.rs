//! Import of a raw image into a disk, and export of a disk as a raw image (holes become
//! seeks when the output is a regular file, so the result is sparse).

use std::io::{Read, Seek, SeekFrom, Write};

use super::steps::STEP;
use super::Volume;
use crate::error::{Error, Result};

/// Fills `buf` from `input` unless it ends first; returns the bytes read.
fn read_full(input: &mut dyn Read, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(buf.get_mut(n..).unwrap_or_default()) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("reading the image", e)),
        }
    }
    Ok(n)
}

/// Bytes exported per step: large, so a disk behind a slow store is read with many
/// requests in flight at once (see `lsm::lookup`).
pub const EXPORT_STEP: usize = 32 << 20;

impl Volume {
    /// Writes the bytes of `input` from offset 0; returns the bytes read. `progress` gets
    /// the running total of bytes written. Steps are written by several threads while
    /// this one reads the next ([`Volume::write_steps`]); ends with a flush and a
    /// checkpoint.
    pub fn import(&self, input: &mut dyn Read, progress: &dyn Fn(u64)) -> Result<u64> {
        let n = self.write_steps(|w| {
            let mut off = 0u64;
            loop {
                let mut buf = w.buffer()?;
                progress(w.written());
                let n = read_full(input, &mut buf)?;
                if n == 0 {
                    return Ok(off);
                }
                if off + n as u64 > self.size() {
                    return Err(Error::invalid(format!(
                        "the image is larger than the {}-byte disk",
                        self.size()
                    )));
                }
                w.write(off, buf, n)?;
                off += n as u64;
                if n < STEP {
                    return Ok(off);
                }
            }
        })?;
        progress(n);
        self.flush()?;
        self.checkpoint()?;
        Ok(n)
    }

    /// Writes the whole disk to `out`. With `seekable`, unallocated ranges are skipped
    /// with a seek (and the file is extended to the disk size at the end).
    pub fn export<W: Write + Seek>(
        &self,
        out: &mut W,
        seekable: bool,
        progress: &dyn Fn(u64),
    ) -> Result<()> {
        let size = self.size();
        let mut buf = vec![0u8; EXPORT_STEP];
        let mut off = 0u64;
        let werr = |e| Error::io("writing the export", e);
        while off < size {
            let n = (size - off).min(EXPORT_STEP as u64);
            let extents = self.block_status(off, n)?;
            if seekable && extents.iter().all(|e| !e.allocated) {
                out.seek(SeekFrom::Current(n as i64)).map_err(werr)?;
            } else {
                // One read for the whole step (many requests in flight when the disk is
                // behind a slow store), then holes skipped with a seek where possible.
                let b = buf
                    .get_mut(..n as usize)
                    .ok_or_else(|| Error::internal("export buffer"))?;
                self.read_at(off, b)?;
                let mut at = 0usize;
                for e in &extents {
                    let len = e.length as usize;
                    let part = b
                        .get(at..at + len)
                        .ok_or_else(|| Error::internal("export extent past the step"))?;
                    if seekable && !e.allocated {
                        out.seek(SeekFrom::Current(len as i64)).map_err(werr)?;
                    } else {
                        out.write_all(part).map_err(werr)?;
                    }
                    at += len;
                }
            }
            off += n;
            progress(off);
        }
        out.flush().map_err(werr)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::Mutex;

    /// An image that fails after `fail_at` bytes, reading in odd-sized pieces.
    struct Image {
        bytes: Vec<u8>,
        at: usize,
        fail_at: usize,
    }

    impl Read for Image {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.at >= self.fail_at {
                return Err(std::io::Error::other("the image's disk went away"));
            }
            let n = buf.len().min(777_777).min(self.fail_at - self.at);
            let end = (self.at + n).min(self.bytes.len());
            let got = self.bytes.get(self.at..end).unwrap_or_default();
            buf[..got.len()].copy_from_slice(got);
            self.at = end;
            Ok(got.len())
        }
    }

    fn image(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|i| {
                // Half the blocks random, half zero: the import's records and holes.
                if (i / 4096) % 2 == 0 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                } else {
                    0
                }
            })
            .collect()
    }

    fn read_all(vol: &Volume) -> Vec<u8> {
        let mut back = vec![0u8; vol.size() as usize];
        vol.read_at(0, &mut back).unwrap();
        back
    }

    /// Steps written by several threads land where they belong, including a last
    /// step that ends inside a block, over a disk already holding other bytes.
    #[test]
    fn an_import_written_in_parallel_steps_reads_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let vol = Volume::create(&dir.path().join("d.swap"), 8 * STEP as u64).unwrap();
        vol.write_at(0, &vec![0xAB; 8 * STEP]).unwrap();
        let len = 5 * STEP + 3 * 4096 + 1234;
        let img = image(len, 7);
        let seen = Mutex::new(Vec::new());
        let n = vol
            .import(
                &mut Image {
                    bytes: img.clone(),
                    at: 0,
                    fail_at: usize::MAX,
                },
                &|p| seen.lock().unwrap().push(p),
            )
            .unwrap();
        assert_eq!(n, len as u64);
        let back = read_all(&vol);
        assert!(back[..len] == img[..], "the imported bytes differ");
        assert!(
            back[len..].iter().all(|&b| b == 0xAB),
            "bytes past the image changed"
        );
        let seen = seen.into_inner().unwrap();
        assert!(seen.windows(2).all(|w| w[0] <= w[1]), "progress went back");
        assert_eq!(seen.last(), Some(&(len as u64)));
        vol.close().unwrap();
    }

    /// A failing image stops the import with its error; the disk stays readable and
    /// holds, block by block, either what it held or the image's bytes.
    #[test]
    fn a_read_error_stops_the_import_and_loses_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let vol = Volume::create(&dir.path().join("d.swap"), 8 * STEP as u64).unwrap();
        vol.write_at(0, &vec![0xCD; 8 * STEP]).unwrap();
        let img = image(8 * STEP, 9);
        let e = vol
            .import(
                &mut Image {
                    bytes: img.clone(),
                    at: 0,
                    fail_at: 5 * STEP + 100,
                },
                &|_| {},
            )
            .unwrap_err();
        assert!(e.to_string().contains("went away"), "{e}");
        let back = read_all(&vol);
        for (i, (b, m)) in back.chunks(4096).zip(img.chunks(4096)).enumerate() {
            assert!(
                b == m || b.iter().all(|&x| x == 0xCD),
                "block {i} is neither the old bytes nor the image's"
            );
        }
        // Every step read whole before the failure was written.
        assert!(back[..5 * STEP] == img[..5 * STEP]);
        assert!(back[5 * STEP..].iter().all(|&x| x == 0xCD));
    }

    /// An image larger than the disk is refused with that message.
    #[test]
    fn an_image_larger_than_the_disk_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let vol = Volume::create(&dir.path().join("d.swap"), 2 * STEP as u64).unwrap();
        let e = vol
            .import(
                &mut Image {
                    bytes: image(2 * STEP + 4096, 3),
                    at: 0,
                    fail_at: usize::MAX,
                },
                &|_| {},
            )
            .unwrap_err();
        assert!(e.to_string().contains("larger than the"), "{e}");
    }
}
