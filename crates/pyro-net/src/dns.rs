//! The gateway's DNS server: a bounded parser for one query, a response builder, host-side
//! resolution and a cache of which names resolved to which addresses.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

/// The largest query accepted (classic DNS over UDP).
pub const MAX_MESSAGE: usize = 512;
/// How long an answer may be cached by the guest, in seconds.
pub const ANSWER_TTL: u32 = 30;
/// How long a host lookup may take before the guest gets SERVFAIL.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Query type A (an IPv4 address).
pub const TYPE_A: u16 = 1;
const CLASS_IN: u16 = 1;
const HEADER: usize = 12;

/// A DNS response code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rcode {
    /// No error (possibly with no answers).
    NoError = 0,
    /// The query was malformed.
    FormErr = 1,
    /// The lookup failed on the host (here: timed out).
    ServFail = 2,
    /// The name does not exist.
    NxDomain = 3,
    /// The kind of query is not supported.
    NotImp = 4,
}

/// One parsed query: a standard query with exactly one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The message id, echoed in the response.
    pub id: u16,
    /// Whether recursion was desired (echoed).
    pub recursion_desired: bool,
    /// The queried name, lowercase, without a trailing dot (empty for the root).
    pub name: String,
    /// The query type (1 is A, 28 is AAAA).
    pub qtype: u16,
    /// The query class (1 is IN).
    pub qclass: u16,
    /// The question section exactly as received, echoed in the response.
    question: Vec<u8>,
}

/// What to do with one incoming message.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A query to answer.
    Query(Query),
    /// A message with a usable header but an unacceptable body: send this error response.
    Reject(Vec<u8>),
    /// Not worth answering (too short, too long, or itself a response): drop it.
    Drop,
}

/// Parses one DNS message from a guest. Never panics, whatever the bytes.
pub fn parse_query(msg: &[u8]) -> Parsed {
    if msg.len() < HEADER || msg.len() > MAX_MESSAGE {
        return Parsed::Drop;
    }
    let be16 = |at: usize| u16::from_be_bytes([msg[at], msg[at + 1]]);
    let id = be16(0);
    let flags = be16(2);
    if flags & 0x8000 != 0 {
        return Parsed::Drop;
    }
    let recursion_desired = flags & 0x0100 != 0;
    let opcode = (flags >> 11) & 0xf;
    if opcode != 0 {
        return Parsed::Reject(header_only(id, recursion_desired, Rcode::NotImp));
    }
    let (qdcount, ancount, nscount) = (be16(4), be16(6), be16(8));
    if qdcount != 1 || ancount != 0 || nscount != 0 {
        return Parsed::Reject(header_only(id, recursion_desired, Rcode::FormErr));
    }
    match parse_question(&msg[HEADER..]) {
        Some((name, qtype, qclass, len)) => Parsed::Query(Query { id, recursion_desired, name, qtype, qclass, question: msg[HEADER..HEADER + len].to_vec() }),
        None => Parsed::Reject(header_only(id, recursion_desired, Rcode::FormErr)),
    }
}

/// The name, type, class and encoded length of the question at the start of `body`. Refuses
/// compression pointers, labels with bytes other than `[A-Za-z0-9_-]` and names over 255 bytes.
fn parse_question(body: &[u8]) -> Option<(String, u16, u16, usize)> {
    let mut at = 0usize;
    let mut labels: Vec<String> = Vec::new();
    loop {
        let len = usize::from(*body.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        let label = body.get(at..at + len)?;
        if !label.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_') {
            return None;
        }
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        at += len;
        if at > 255 {
            return None;
        }
    }
    let fixed = body.get(at..at + 4)?;
    let qtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    let qclass = u16::from_be_bytes([fixed[2], fixed[3]]);
    Some((labels.join("."), qtype, qclass, at + 4))
}

/// A response with no question and no answers.
fn header_only(id: u16, recursion_desired: bool, rcode: Rcode) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER);
    push_header(&mut out, id, recursion_desired, rcode, 0, 0);
    out
}

fn push_header(out: &mut Vec<u8>, id: u16, recursion_desired: bool, rcode: Rcode, qdcount: u16, ancount: u16) {
    let flags = 0x8000 | if recursion_desired { 0x0100 } else { 0 } | 0x0080 | rcode as u16;
    for word in [id, flags, qdcount, ancount, 0, 0] {
        out.extend_from_slice(&word.to_be_bytes());
    }
}

/// The response to `query` with `rcode` and one A record (TTL [`ANSWER_TTL`]) per address, as many
/// as fit in [`MAX_MESSAGE`] bytes.
pub fn build_response(query: &Query, rcode: Rcode, addrs: &[Ipv4Addr]) -> Vec<u8> {
    const ANSWER: usize = 16;
    let room = MAX_MESSAGE.saturating_sub(HEADER + query.question.len()) / ANSWER;
    let addrs = &addrs[..addrs.len().min(room)];
    let mut out = Vec::with_capacity(HEADER + query.question.len() + ANSWER * addrs.len());
    push_header(&mut out, query.id, query.recursion_desired, rcode, 1, u16::try_from(addrs.len()).unwrap_or(0));
    out.extend_from_slice(&query.question);
    for addr in addrs {
        out.extend_from_slice(&[0xc0, 0x0c]);
        out.extend_from_slice(&TYPE_A.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&ANSWER_TTL.to_be_bytes());
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&addr.octets());
    }
    out
}

/// Whether answering `query` needs a host lookup (an A query in class IN for a non-empty name).
/// Every other query is answered at once by [`answer_without_lookup`].
pub fn needs_lookup(query: &Query) -> bool {
    query.qtype == TYPE_A && query.qclass == CLASS_IN && !query.name.is_empty()
}

/// The immediate answer to a query that needs no lookup: NOERROR with no answers (AAAA and every
/// other type; IPv6 is not offered to the guest).
pub fn answer_without_lookup(query: &Query) -> Vec<u8> {
    build_response(query, Rcode::NoError, &[])
}

/// Resolves an A query on the host and builds the response (SERVFAIL past
/// [`LOOKUP_TIMEOUT`]); also returns the addresses answered. The host resolver runs on a
/// blocking thread that a timeout cannot stop, so this returns only once that thread is
/// done: the answer goes to `answer` as soon as it is known, and a caller that bounds
/// lookups in flight by this future bounds the threads too.
pub async fn answer_with_lookup(query: &Query, answer: impl FnOnce(Vec<u8>, Vec<Ipv4Addr>)) {
    let name = query.name.clone();
    let mut lookup = tokio::task::spawn_blocking(move || std::net::ToSocketAddrs::to_socket_addrs(&(name.as_str(), 0)).map(Iterator::collect::<Vec<_>>));
    let (response, addrs) = match tokio::time::timeout(LOOKUP_TIMEOUT, &mut lookup).await {
        Err(_) => {
            answer(build_response(query, Rcode::ServFail, &[]), Vec::new());
            let _ = lookup.await;
            return;
        }
        Ok(Err(_)) | Ok(Ok(Err(_))) => (build_response(query, Rcode::NxDomain, &[]), Vec::new()),
        Ok(Ok(Ok(found))) => {
            let mut v4: Vec<Ipv4Addr> = Vec::new();
            for addr in found {
                if let IpAddr::V4(ip) = addr.ip() {
                    if !v4.contains(&ip) {
                        v4.push(ip);
                    }
                }
            }
            (build_response(query, Rcode::NoError, &v4), v4)
        }
    };
    answer(response, addrs);
}

/// Remembers which names resolved to which addresses, bounded to a number of (address, name)
/// pairs; the oldest pair goes first.
#[derive(Debug)]
pub struct DnsCache {
    by_addr: HashMap<IpAddr, Vec<String>>,
    order: VecDeque<(IpAddr, String)>,
    capacity: usize,
}

impl DnsCache {
    /// An empty cache holding at most `capacity` pairs.
    pub fn new(capacity: usize) -> DnsCache {
        DnsCache { by_addr: HashMap::new(), order: VecDeque::new(), capacity }
    }

    /// Records that `name` resolved to `addr`.
    pub fn insert(&mut self, addr: IpAddr, name: &str) {
        if self.capacity == 0 || self.by_addr.get(&addr).is_some_and(|names| names.iter().any(|n| n == name)) {
            return;
        }
        while self.order.len() >= self.capacity {
            let Some((old_addr, old_name)) = self.order.pop_front() else { break };
            if let Some(names) = self.by_addr.get_mut(&old_addr) {
                names.retain(|n| *n != old_name);
                if names.is_empty() {
                    self.by_addr.remove(&old_addr);
                }
            }
        }
        self.by_addr.entry(addr).or_default().push(name.to_string());
        self.order.push_back((addr, name.to_string()));
    }

    /// The names known to resolve to `addr`, oldest first.
    pub fn names(&self, addr: IpAddr) -> &[String] {
        self.by_addr.get(&addr).map_or(&[], Vec::as_slice)
    }

    /// How many (address, name) pairs are held.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A query as `dig` would send it: id, RD, one question, one EDNS OPT record.
    fn query_bytes(name: &str, qtype: u16) -> Vec<u8> {
        let mut out = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
        for label in name.split('.').filter(|l| !l.is_empty()) {
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
        out.extend_from_slice(&qtype.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&[0, 0, 41, 4, 208, 0, 0, 0, 0, 0, 0]);
        out
    }

    #[test]
    fn parses_a_real_query_and_builds_its_answer() {
        let Parsed::Query(q) = parse_query(&query_bytes("Example.COM", TYPE_A)) else { panic!("not a query") };
        assert_eq!((q.id, q.recursion_desired, q.name.as_str(), q.qtype, q.qclass), (0x1234, true, "example.com", 1, 1));
        assert!(needs_lookup(&q));
        let resp = build_response(&q, Rcode::NoError, &[Ipv4Addr::new(203, 0, 113, 5), Ipv4Addr::new(198, 51, 100, 1)]);
        assert_eq!(&resp[..12], &[0x12, 0x34, 0x81, 0x80, 0, 1, 0, 2, 0, 0, 0, 0]);
        let qlen = 1 + 7 + 1 + 3 + 1 + 4;
        assert_eq!(&resp[12..12 + qlen], &query_bytes("Example.COM", TYPE_A)[12..12 + qlen]);
        let answer = &resp[12 + qlen..12 + qlen + 16];
        assert_eq!(answer, &[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 203, 0, 113, 5]);
        assert_eq!(resp.len(), 12 + qlen + 32);
    }

    #[test]
    fn aaaa_gets_noerror_without_answers() {
        let Parsed::Query(q) = parse_query(&query_bytes("example.com", 28)) else { panic!("not a query") };
        assert!(!needs_lookup(&q));
        let resp = answer_without_lookup(&q);
        assert_eq!(&resp[2..8], &[0x81, 0x80, 0, 1, 0, 0]);
    }

    #[test]
    fn answers_are_capped_to_512_bytes() {
        let Parsed::Query(q) = parse_query(&query_bytes("a.b", TYPE_A)) else { panic!("not a query") };
        let many: Vec<Ipv4Addr> = (0..100).map(|i| Ipv4Addr::new(203, 0, 113, i)).collect();
        assert!(build_response(&q, Rcode::NoError, &many).len() <= MAX_MESSAGE);
    }

    #[test]
    fn odd_messages_are_refused() {
        let mut two = query_bytes("a.com", 1);
        two[5] = 2;
        assert!(matches!(parse_query(&two), Parsed::Reject(r) if r[3] & 0xf == 1));
        let mut pointer = query_bytes("a.com", 1);
        pointer[12] = 0xc0;
        assert!(matches!(parse_query(&pointer), Parsed::Reject(_)));
        let mut response = query_bytes("a.com", 1);
        response[2] |= 0x80;
        assert_eq!(parse_query(&response), Parsed::Drop);
        let mut opcode = query_bytes("a.com", 1);
        opcode[2] |= 0x10;
        assert!(matches!(parse_query(&opcode), Parsed::Reject(r) if r[3] & 0xf == 4));
        let mut weird = query_bytes("a.com", 1);
        weird[13] = b' ';
        assert!(matches!(parse_query(&weird), Parsed::Reject(_)));
        assert_eq!(parse_query(&[0; 11]), Parsed::Drop);
        assert_eq!(parse_query(&[0; 513]), Parsed::Drop);
        let truncated = query_bytes("a.com", 1);
        assert!(matches!(parse_query(&truncated[..15]), Parsed::Reject(_)));
    }

    #[tokio::test]
    async fn localhost_resolves() {
        let Parsed::Query(q) = parse_query(&query_bytes("localhost", TYPE_A)) else { panic!("not a query") };
        let mut answered = None;
        answer_with_lookup(&q, |resp, addrs| answered = Some((resp, addrs))).await;
        let (resp, addrs) = answered.expect("an answer");
        assert!(addrs.contains(&Ipv4Addr::LOCALHOST), "{addrs:?}");
        assert_eq!(resp[3] & 0xf, 0);
    }

    #[test]
    fn cache_is_bounded_and_evicts_oldest() {
        let mut c = DnsCache::new(3);
        let a: IpAddr = "203.0.113.1".parse().unwrap();
        let b: IpAddr = "203.0.113.2".parse().unwrap();
        c.insert(a, "one");
        c.insert(a, "one");
        c.insert(a, "two");
        c.insert(b, "three");
        assert_eq!(c.len(), 3);
        c.insert(b, "four");
        assert_eq!(c.names(a), ["two".to_string()]);
        assert_eq!(c.names(b), ["three".to_string(), "four".to_string()]);
        assert_eq!(c.len(), 3);
        assert!(c.names("1.1.1.1".parse().unwrap()).is_empty());
    }

    proptest! {
        #[test]
        fn parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Parsed::Query(q) = parse_query(&bytes) {
                prop_assert!(build_response(&q, Rcode::NoError, &[Ipv4Addr::LOCALHOST]).len() <= MAX_MESSAGE);
            }
        }

        #[test]
        fn valid_names_round_trip(labels in proptest::collection::vec("[a-z0-9][a-z0-9-]{0,20}", 1..5)) {
            let name = labels.join(".");
            let Parsed::Query(q) = parse_query(&query_bytes(&name, TYPE_A)) else { panic!("not a query") };
            prop_assert_eq!(q.name, name);
        }
    }
}
