//! Who may use which export (`serve --allow EXPORT=ID[:ro],…`): identities are the
//! common names (CN) of client certificates that `--tls-verify-peer` checked. With no
//! rule every client that completed the handshake may use every export; with rules,
//! an export is open only to the identities its rules (or `*`'s) name, read-only for
//! those marked `:ro`.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// What a client may do with an export.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Refused: NBD_REP_ERR_POLICY.
    Denied,
    /// Reads only: the export is offered read-only.
    ReadOnly,
    /// Reads and writes.
    ReadWrite,
}

/// The `--allow` rules.
#[derive(Clone, Debug, Default)]
pub struct AccessList {
    /// Export name (or `*`) -> (identity, read-only).
    rules: BTreeMap<String, Vec<(String, bool)>>,
}

impl AccessList {
    /// Parses `--allow` values: `EXPORT=ID[:ro][,ID[:ro]…]`; EXPORT is an export's name
    /// (the head's `--export` name, a snapshot's name or id) or `*` for all.
    pub fn parse(values: &[String]) -> Result<Self> {
        let mut rules: BTreeMap<String, Vec<(String, bool)>> = BTreeMap::new();
        for v in values {
            let (export, ids) = v.split_once('=').ok_or_else(|| {
                Error::invalid(format!(
                    "--allow {v}: expected EXPORT=IDENTITY[:ro][,IDENTITY…] (EXPORT may be *)"
                ))
            })?;
            for id in ids.split(',') {
                let (name, ro) = match id.strip_suffix(":ro") {
                    Some(n) => (n, true),
                    None => (id, false),
                };
                if name.is_empty() {
                    return Err(Error::invalid(format!("--allow {v}: an empty identity")));
                }
                rules
                    .entry(export.to_string())
                    .or_default()
                    .push((name.to_string(), ro));
            }
        }
        Ok(Self { rules })
    }

    /// True when no rule was given (everyone may use everything).
    pub fn is_open(&self) -> bool {
        self.rules.is_empty()
    }

    /// What `identity` (None: no client certificate) may do with the export known by
    /// `names` (its name and aliases).
    pub fn check<'a>(
        &self,
        names: impl Iterator<Item = &'a str>,
        identity: Option<&str>,
    ) -> Access {
        if self.is_open() {
            return Access::ReadWrite;
        }
        let Some(identity) = identity else {
            return Access::Denied;
        };
        let mut best = Access::Denied;
        let keys: Vec<&str> = names.chain(std::iter::once("*")).collect();
        for key in keys {
            for (id, ro) in self.rules.get(key).into_iter().flatten() {
                if id == identity {
                    let a = if *ro {
                        Access::ReadOnly
                    } else {
                        Access::ReadWrite
                    };
                    if a == Access::ReadWrite || best == Access::Denied {
                        best = a;
                    }
                }
            }
        }
        best
    }
}

/// The subject common name (OID 2.5.4.3) of a DER certificate, or None. Only reads a
/// certificate rustls has already verified; a malformed one gives None.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert, _) = tlv(der)?; // Certificate
    let (_, tbs, _) = tlv(cert)?; // TBSCertificate
    let mut rest = tbs;
    // version [0] (optional), serial, signature algorithm, issuer, validity, subject.
    let mut fields = Vec::new();
    while let Some((tag, body, next)) = tlv(rest) {
        fields.push((tag, body));
        rest = next;
        if fields.len() == 7 {
            break;
        }
    }
    let skip = usize::from(fields.first()?.0 == 0xA0);
    let (tag, subject) = *fields.get(skip + 4)?;
    if tag != 0x30 {
        return None;
    }
    let mut rdns = subject;
    while let Some((_, set, next)) = tlv(rdns) {
        let mut attrs = set;
        while let Some((_, atv, after)) = tlv(attrs) {
            let (otag, oid, value) = tlv(atv)?;
            if otag == 0x06 && oid == [0x55, 0x04, 0x03] {
                let (_, text, _) = tlv(value)?;
                return String::from_utf8(text.to_vec()).ok();
            }
            attrs = after;
        }
        rdns = next;
    }
    None
}

/// One DER tag-length-value: (tag, value, the bytes after it).
fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *b.first()?;
    let first = *b.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | usize::from(*b.get(2 + i)?);
        }
        (len, 2 + n)
    };
    let value = b.get(header..header.checked_add(len)?)?;
    Some((tag, value, b.get(header + len..)?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn rules_give_each_identity_its_access() {
        let a =
            AccessList::parse(&["disk=alice,bob:ro".to_string(), "*=root".to_string()]).unwrap();
        let disk = || ["disk", "0123abcd"].into_iter();
        assert_eq!(a.check(disk(), Some("alice")), Access::ReadWrite);
        assert_eq!(a.check(disk(), Some("bob")), Access::ReadOnly);
        assert_eq!(a.check(disk(), Some("root")), Access::ReadWrite);
        assert_eq!(a.check(disk(), Some("mallory")), Access::Denied);
        assert_eq!(a.check(disk(), None), Access::Denied);
        assert_eq!(
            a.check(["other"].into_iter(), Some("alice")),
            Access::Denied
        );
        assert_eq!(AccessList::default().check(disk(), None), Access::ReadWrite);
        for bad in ["disk", "disk=", "disk=alice,,bob"] {
            assert!(AccessList::parse(&[bad.to_string()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn common_name_survives_garbage() {
        for junk in [
            &[][..],
            &[0x30],
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
            &[0x30, 0x02, 0x30],
        ] {
            assert_eq!(common_name(junk), None);
        }
    }
}
