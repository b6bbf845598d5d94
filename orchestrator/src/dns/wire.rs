//! Talking DNS itself: one exchange with a server (UDP, TCP when the answer is truncated,
//! optionally signed with TSIG) and the conversions between orch's text values and
//! hickory's records.

use super::{DnsError, Kind};
use hickory_client::client::Client;
use hickory_proto::dnssec::tsig::TSigner;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, TXT};
use hickory_proto::rr::{Name, RData, RecordType};
use hickory_proto::runtime::TokioRuntimeProvider;
use hickory_proto::tcp::TcpClientStream;
use hickory_proto::udp::UdpClientStream;
use hickory_proto::xfer::{DnsHandle, FirstAnswer};
use hickory_proto::ProtoError;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Sends `message` (signed when `signer` is given) over UDP, and again over TCP if the
/// answer was truncated.
pub async fn exchange(
    server: SocketAddr,
    message: Message,
    signer: Option<Arc<TSigner>>,
) -> Result<Message, ProtoError> {
    let udp = UdpClientStream::builder(server, TokioRuntimeProvider::default())
        .with_timeout(Some(TIMEOUT))
        .with_signer(signer.clone().map(|s| s as _))
        .build();
    let (client, background) = Client::connect(udp).await?;
    let task = tokio::spawn(background);
    let answer = client.send(message.clone()).first_answer().await;
    task.abort();
    let answer = answer?;
    if !answer.truncated() {
        return Ok(answer.into_message());
    }
    let (stream, handle) =
        TcpClientStream::new(server, None, Some(TIMEOUT), TokioRuntimeProvider::default());
    let (client, background) =
        Client::with_timeout(stream, handle, TIMEOUT, signer.map(|s| s as _)).await?;
    let task = tokio::spawn(background);
    let answer = client.send(message).first_answer().await;
    task.abort();
    Ok(answer?.into_message())
}

/// A query message; `recursion` asks a resolver to look further than its own data.
pub fn query_message(name: &Name, rtype: RecordType, recursion: bool) -> Message {
    let mut message = Message::new();
    message
        .set_id(rand_id())
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(recursion);
    message.add_query(Query::query(name.clone(), rtype));
    message
}

/// The values of `name`/`kind` in an answer; NXDOMAIN is an empty set.
pub fn answer_values(
    answer: &Message,
    name: &Name,
    kind: Kind,
    server: SocketAddr,
) -> Result<Vec<String>, DnsError> {
    match answer.response_code() {
        ResponseCode::NoError => {}
        ResponseCode::NXDomain => return Ok(Vec::new()),
        code => {
            return Err(DnsError::Server {
                server: server.to_string(),
                message: format!("query {name} {kind}: {code}"),
            })
        }
    }
    Ok(answer
        .answers()
        .iter()
        .filter(|r| r.record_type() == record_type(kind) && r.name() == name)
        .filter_map(|r| value_of(r.data()))
        .collect())
}

/// An unsigned query of `name`/`kind` at one server.
pub async fn query(
    server: SocketAddr,
    name: &str,
    kind: Kind,
    recursion: bool,
) -> Result<Vec<String>, DnsError> {
    let name = fqdn(name)?;
    let answer = exchange(
        server,
        query_message(&name, record_type(kind), recursion),
        None,
    )
    .await
    .map_err(|source| DnsError::Transport {
        server: server.to_string(),
        source,
    })?;
    answer_values(&answer, &name, kind, server)
}

pub fn fqdn(name: &str) -> Result<Name, DnsError> {
    let mut n = Name::from_str(name)
        .map_err(|e| DnsError::Config(format!("`{name}` is not a DNS name: {e}")))?;
    n.set_fqdn(true);
    Ok(n)
}

pub fn record_type(kind: Kind) -> RecordType {
    match kind {
        Kind::A => RecordType::A,
        Kind::Aaaa => RecordType::AAAA,
        Kind::Txt => RecordType::TXT,
    }
}

pub fn rdata(kind: Kind, value: &str) -> Result<RData, DnsError> {
    let bad = || DnsError::Value {
        kind,
        value: value.to_owned(),
    };
    Ok(match kind {
        Kind::A => RData::A(A(value.parse().map_err(|_| bad())?)),
        Kind::Aaaa => RData::AAAA(AAAA(value.parse().map_err(|_| bad())?)),
        Kind::Txt => RData::TXT(TXT::new(vec![value.to_owned()])),
    })
}

pub fn value_of(data: &RData) -> Option<String> {
    match data {
        RData::A(a) => Some(IpAddr::V4(a.0).to_string()),
        RData::AAAA(a) => Some(IpAddr::V6(a.0).to_string()),
        RData::TXT(t) => Some(
            t.iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect(),
        ),
        _ => None,
    }
}

pub fn rand_id() -> u16 {
    let mut b = [0u8; 2];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    u16::from_le_bytes(b)
}
