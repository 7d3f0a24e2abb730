//! The option haggling phase. Unknown options get NBD_REP_ERR_UNSUP; malformed ones
//! NBD_REP_ERR_INVALID; only a broken framing (bad magic, oversized option) closes.

use nbd_proto::{self as p, flags, handshake as hs, info, opt, rep};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::access::{Access, AccessList};
use super::{Negotiated, BASE_ALLOCATION_ID, MAX_PAYLOAD, MIN_BLOCK, PREFERRED_BLOCK};

/// Option data larger than this closes the connection.
const MAX_OPTION: u32 = 64 << 10;

/// What an export looks like to clients.
#[derive(Clone, Debug)]
pub struct ExportInfo {
    /// Export name (listed by NBD_OPT_LIST).
    pub name: String,
    /// Other names that select it (a named snapshot's id).
    pub aliases: Vec<String>,
    /// Description.
    pub description: String,
    /// Size in bytes.
    pub size: u64,
    /// Read-only export.
    pub read_only: bool,
}

fn transmission_flags(e: &ExportInfo, structured: bool, access: Access) -> u16 {
    let mut f = flags::HAS_FLAGS
        | flags::SEND_FLUSH
        | flags::SEND_FUA
        | flags::SEND_TRIM
        | flags::SEND_WRITE_ZEROES
        | flags::SEND_FAST_ZERO
        | flags::SEND_CACHE
        | flags::CAN_MULTI_CONN;
    if structured {
        f |= flags::SEND_DF;
    }
    if e.read_only || access == Access::ReadOnly {
        f |= flags::READ_ONLY;
    }
    f
}

/// Who is on the other end, for the `--allow` rules.
pub struct Peer<'a> {
    /// The rules.
    pub access: &'a AccessList,
    /// The client certificate's common name, when one was verified.
    pub identity: Option<String>,
    /// Its address, for log lines.
    pub addr: &'a str,
}

impl Peer<'_> {
    fn access(&self, e: &ExportInfo) -> Access {
        let names = std::iter::once(e.name.as_str()).chain(e.aliases.iter().map(String::as_str));
        self.access.check(names, self.identity.as_deref())
    }

    fn refused(&self, e: &ExportInfo) -> String {
        let who = self
            .identity
            .as_deref()
            .unwrap_or("(no client certificate)");
        tracing::warn!(identity = who, peer = self.addr, export = %e.name, "refused by --allow");
        format!("{who} may not use export '{}'", e.name)
    }
}

/// Every export a server offers; the first is the default (the empty name selects it).
#[derive(Clone, Debug)]
pub struct Catalog {
    /// The exports.
    pub exports: Vec<ExportInfo>,
    /// The one an empty name selects (0: the head; `serve --follow` moves it to the
    /// newest version).
    pub default: usize,
}

impl Catalog {
    /// The export a client's name selects.
    fn find(&self, n: &str) -> Option<(usize, &ExportInfo)> {
        if n.is_empty() {
            return self.exports.get(self.default).map(|e| (self.default, e));
        }
        self.exports
            .iter()
            .enumerate()
            .find(|(_, e)| e.name == n || e.aliases.iter().any(|a| a == n))
    }
}

async fn reply<S: AsyncWrite + Unpin>(
    s: &mut S,
    option: u32,
    kind: u32,
    data: &[u8],
) -> std::io::Result<()> {
    s.write_all(&p::encode_option_reply(option, kind, data))
        .await
}

async fn error_reply<S: AsyncWrite + Unpin>(
    s: &mut S,
    option: u32,
    kind: u32,
    msg: &str,
) -> std::io::Result<()> {
    tracing::debug!(option, kind, msg, "option refused");
    reply(s, option, kind, msg.as_bytes()).await
}

/// Option data that names an export: that export and the rest of the data, or the
/// refusal to send.
fn for_export<T>(
    decoded: Result<(String, T), p::ProtoError>,
    cat: &Catalog,
) -> Result<(usize, &ExportInfo, T), (u32, String)> {
    match decoded {
        Err(err) => Err((rep::ERR_INVALID, err.to_string())),
        Ok((name, rest)) => match cat.find(&name) {
            Some((i, e)) => Ok((i, e, rest)),
            None => Err((rep::ERR_UNKNOWN, format!("no export named '{name}'"))),
        },
    }
}

fn string_data(s: &str) -> Vec<u8> {
    let mut d = (s.len() as u32).to_be_bytes().to_vec();
    d.extend_from_slice(s.as_bytes());
    d
}

/// Where the option phase stands with TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsState {
    /// The server has no TLS: STARTTLS is unsupported.
    Off,
    /// TLS is required and not started: every option but STARTTLS and ABORT is refused
    /// with NBD_REP_ERR_TLS_REQD, and nothing about the exports is said.
    Required,
    /// The options now run inside TLS.
    Established,
}

/// How an option phase ended.
#[derive(Debug)]
pub enum Outcome {
    /// An export was chosen: the transmission phase follows.
    Go(Negotiated),
    /// STARTTLS was acknowledged: the TLS handshake follows, then the options again.
    StartTls,
    /// The client aborted, disconnected or broke the framing.
    Closed,
}

/// Sends the server's greeting and reads the client's flags; `Some(no_zeroes)`, or
/// None when the client sent flags this server does not know.
pub async fn greet<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> std::io::Result<Option<bool>> {
    let mut hello = Vec::with_capacity(18);
    hello.extend_from_slice(&p::NBDMAGIC.to_be_bytes());
    hello.extend_from_slice(&p::IHAVEOPT.to_be_bytes());
    hello.extend_from_slice(&(hs::FIXED_NEWSTYLE | hs::NO_ZEROES).to_be_bytes());
    s.write_all(&hello).await?;
    let cflags = s.read_u32().await?;
    if cflags & !(hs::C_FIXED_NEWSTYLE | hs::C_NO_ZEROES) != 0 {
        tracing::info!(cflags, "client sent unknown flags; closing");
        return Ok(None);
    }
    Ok(Some(cflags & hs::C_NO_ZEROES != 0))
}

/// The option haggling, until an export is chosen, STARTTLS is acknowledged (with
/// `tls` Required) or the client goes.
pub async fn options<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    cat: &Catalog,
    no_zeroes: bool,
    tls: TlsState,
    peer: &Peer<'_>,
) -> std::io::Result<Outcome> {
    let mut structured = false;
    let mut base_allocation = false;
    loop {
        let mut h = [0u8; p::OPTION_HEADER_LEN];
        s.read_exact(&mut h).await?;
        let (option, len) = match p::decode_option_header(&h) {
            Ok(x) => x,
            Err(err) => {
                tracing::info!(%err, "bad option header; closing");
                return Ok(Outcome::Closed);
            }
        };
        if len > MAX_OPTION {
            tracing::info!(len, "option too large; closing");
            return Ok(Outcome::Closed);
        }
        let mut data = vec![0u8; len as usize];
        s.read_exact(&mut data).await?;
        if option == opt::STARTTLS {
            let (kind, msg) = match tls {
                TlsState::Required if data.is_empty() => {
                    reply(s, option, rep::ACK, &[]).await?;
                    return Ok(Outcome::StartTls);
                }
                TlsState::Required => (rep::ERR_INVALID, "STARTTLS takes no data"),
                TlsState::Established => (rep::ERR_INVALID, "TLS is already on"),
                TlsState::Off => (
                    rep::ERR_UNSUP,
                    "this server has no TLS (serve --tls-certificates DIR)",
                ),
            };
            error_reply(s, option, kind, msg).await?;
            continue;
        }
        if tls == TlsState::Required {
            match option {
                opt::ABORT => {
                    let _ = reply(s, option, rep::ACK, &[]).await;
                    return Ok(Outcome::Closed);
                }
                // No reply can refuse it: the connection closes.
                opt::EXPORT_NAME => {
                    tracing::info!(
                        "EXPORT_NAME before STARTTLS on a server that requires TLS; closing"
                    );
                    return Ok(Outcome::Closed);
                }
                _ => {
                    error_reply(
                        s,
                        option,
                        rep::ERR_TLS_REQD,
                        "TLS is required: send NBD_OPT_STARTTLS first",
                    )
                    .await?;
                    continue;
                }
            }
        }
        match option {
            opt::EXPORT_NAME => {
                let name = String::from_utf8_lossy(&data);
                let Some((export, e)) = cat.find(&name) else {
                    tracing::info!(%name, "unknown export requested with EXPORT_NAME; closing");
                    return Ok(Outcome::Closed);
                };
                let access = peer.access(e);
                if access == Access::Denied {
                    peer.refused(e);
                    return Ok(Outcome::Closed);
                }
                let f = transmission_flags(e, structured, access);
                let mut out = e.size.to_be_bytes().to_vec();
                out.extend_from_slice(&f.to_be_bytes());
                if !no_zeroes {
                    out.extend_from_slice(&[0u8; 124]);
                }
                s.write_all(&out).await?;
                return Ok(Outcome::Go(Negotiated {
                    structured,
                    base_allocation,
                    flags: f,
                    export,
                }));
            }
            opt::ABORT => {
                let _ = reply(s, option, rep::ACK, &[]).await;
                return Ok(Outcome::Closed);
            }
            opt::LIST => {
                if !data.is_empty() {
                    error_reply(s, option, rep::ERR_INVALID, "LIST takes no data").await?;
                    continue;
                }
                for e in cat
                    .exports
                    .iter()
                    .filter(|e| peer.access(e) != Access::Denied)
                {
                    reply(s, option, rep::SERVER, &string_data(&e.name)).await?;
                }
                reply(s, option, rep::ACK, &[]).await?;
            }
            opt::INFO | opt::GO => {
                let (export, e, infos) = match for_export(p::decode_info_request(&data), cat) {
                    Ok(x) => x,
                    Err((kind, msg)) => {
                        error_reply(s, option, kind, &msg).await?;
                        continue;
                    }
                };
                let access = peer.access(e);
                if access == Access::Denied {
                    let msg = peer.refused(e);
                    error_reply(s, option, rep::ERR_POLICY, &msg).await?;
                    continue;
                }
                let f = transmission_flags(e, structured, access);
                let mut ex = info::EXPORT.to_be_bytes().to_vec();
                ex.extend_from_slice(&e.size.to_be_bytes());
                ex.extend_from_slice(&f.to_be_bytes());
                reply(s, option, rep::INFO, &ex).await?;
                if infos.contains(&info::NAME) {
                    let mut d = info::NAME.to_be_bytes().to_vec();
                    d.extend_from_slice(e.name.as_bytes());
                    reply(s, option, rep::INFO, &d).await?;
                }
                if infos.contains(&info::DESCRIPTION) {
                    let mut d = info::DESCRIPTION.to_be_bytes().to_vec();
                    d.extend_from_slice(e.description.as_bytes());
                    reply(s, option, rep::INFO, &d).await?;
                }
                let mut bs = info::BLOCK_SIZE.to_be_bytes().to_vec();
                for v in [MIN_BLOCK, PREFERRED_BLOCK, MAX_PAYLOAD] {
                    bs.extend_from_slice(&v.to_be_bytes());
                }
                reply(s, option, rep::INFO, &bs).await?;
                reply(s, option, rep::ACK, &[]).await?;
                if option == opt::GO {
                    return Ok(Outcome::Go(Negotiated {
                        structured,
                        base_allocation,
                        flags: f,
                        export,
                    }));
                }
            }
            opt::STRUCTURED_REPLY => {
                if !data.is_empty() {
                    error_reply(
                        s,
                        option,
                        rep::ERR_INVALID,
                        "STRUCTURED_REPLY takes no data",
                    )
                    .await?;
                    continue;
                }
                structured = true;
                reply(s, option, rep::ACK, &[]).await?;
            }
            opt::LIST_META_CONTEXT | opt::SET_META_CONTEXT => {
                if !structured {
                    error_reply(
                        s,
                        option,
                        rep::ERR_INVALID,
                        "negotiate structured replies first",
                    )
                    .await?;
                    continue;
                }
                let queries = match for_export(p::decode_meta_context_request(&data), cat) {
                    Ok((_, e, _)) if peer.access(e) == Access::Denied => {
                        let msg = peer.refused(e);
                        error_reply(s, option, rep::ERR_POLICY, &msg).await?;
                        continue;
                    }
                    Ok((_, _, q)) => q,
                    Err((kind, msg)) => {
                        error_reply(s, option, kind, &msg).await?;
                        continue;
                    }
                };
                let set = option == opt::SET_META_CONTEXT;
                let matches = if set {
                    queries.iter().any(|q| q == p::BASE_ALLOCATION)
                } else {
                    queries.is_empty()
                        || queries
                            .iter()
                            .any(|q| q == p::BASE_ALLOCATION || q == "base:")
                };
                if set {
                    base_allocation = matches;
                }
                if matches {
                    let mut d = BASE_ALLOCATION_ID.to_be_bytes().to_vec();
                    d.extend_from_slice(p::BASE_ALLOCATION.as_bytes());
                    reply(s, option, rep::META_CONTEXT, &d).await?;
                }
                reply(s, option, rep::ACK, &[]).await?;
            }
            other => {
                error_reply(s, other, rep::ERR_UNSUP, "option not supported").await?;
            }
        }
    }
}
