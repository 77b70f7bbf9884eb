//! An authoritative DNS server inside the test process, on a UDP port of 127.0.0.1 chosen by
//! the system: messages are decoded and encoded by hickory-proto, the answers come from a
//! table of per-name behaviours the test sets (and may change while it runs), and every query
//! is logged so a test can assert what was asked.
//!
//! hickory-server is not used: every behaviour here (a SERVFAIL once, a slow answer, an
//! answer order rotating per query) is custom handler logic either way, and the socket loop
//! is a few lines; the messages themselves are hickory's.
//!
//! DNSSEC: [`DnsServer::sign`] makes one zone signed with keys generated in the test (ECDSA
//! P-256 through hickory's ring signer): the apex answers DNSKEY queries with its key set, and
//! to a query with the DO bit every answer RRset at or below the apex comes with an RRSIG
//! (the key set signed by the key-signing key, the rest by the zone-signing key). A name can
//! have its signatures spoiled ([`Fault`]): tampered bytes, expired, or left out.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_resolver::proto::dnssec::crypto::EcdsaSigningKey;
use hickory_resolver::proto::dnssec::rdata::{DNSSECRData, DNSKEY, DS, RRSIG};
use hickory_resolver::proto::dnssec::{Algorithm, DigestType, SigningKey, Verifier, TBS};
use hickory_resolver::proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, CNAME};
use hickory_resolver::proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_resolver::proto::serialize::binary::{BinDecodable, BinEncodable};
use tokio::net::UdpSocket;

/// How the server answers for one name.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// These addresses (A and AAAA by family; a family without addresses answers NOERROR with
    /// no records) with this TTL, in this order.
    Addrs { addrs: Vec<IpAddr>, ttl: u32 },
    /// Like `Addrs`, but the list is rotated by one for every A or AAAA query.
    Rotating { addrs: Vec<IpAddr>, ttl: u32 },
    /// A CNAME to another name of the table, followed in the same answer.
    Cname(String),
    /// NXDOMAIN.
    NxDomain,
    /// SERVFAIL to every query.
    ServFail,
    /// SERVFAIL to the first query of each type, then the addresses.
    ServFailOnce(Vec<IpAddr>),
    /// REFUSED.
    Refused,
    /// NOERROR without any record.
    NoRecords,
    /// The addresses, but only after this delay.
    Slow(Duration, Vec<IpAddr>),
    /// These records, those of the asked type (MX, TXT, …); NOERROR without records for
    /// other types.
    Records(Vec<RData>),
}

/// One query as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    /// The name in lowercase, with its trailing dot.
    pub name: String,
    pub kind: RecordType,
}

#[derive(Default)]
struct State {
    /// Names in lowercase without the trailing dot; `*.zone` entries match any name below it.
    table: HashMap<String, Behaviour>,
    log: Vec<Asked>,
    /// Queries seen per (name, type), for `ServFailOnce` and `Rotating`.
    seen: HashMap<(String, RecordType), usize>,
    /// The signed zone, if any.
    signed: Option<Signed>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").field("table", &self.table).field("log", &self.log).finish_non_exhaustive()
    }
}

/// Which keys sign a zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// One key (flags 257) signs everything, the key set included.
    Combined,
    /// A key-signing key (257) signs the key set, a zone-signing key (256) the rest.
    Split,
}

/// How the signatures of a name's answers are spoiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// A byte of the signature is changed.
    Tampered,
    /// The signature's validity period ended an hour ago.
    Expired,
    /// No RRSIG at all.
    Unsigned,
}

/// One generated key of the signed zone.
struct ZoneKey {
    signer: EcdsaSigningKey,
    dnskey: DNSKEY,
    tag: u16,
}

impl ZoneKey {
    fn generate(flags: u16) -> ZoneKey {
        let algorithm = Algorithm::ECDSAP256SHA256;
        let pkcs8 = EcdsaSigningKey::generate_pkcs8(algorithm).expect("generate a zone key");
        let signer = EcdsaSigningKey::from_pkcs8(&pkcs8, algorithm).expect("load the zone key");
        let dnskey = DNSKEY::with_flags(flags, signer.to_public_key().expect("the zone key's public half"));
        let tag = dnskey.calculate_key_tag().expect("the zone key's tag");
        ZoneKey { signer, dnskey, tag }
    }
}

struct Signed {
    zone: Name,
    ksk: ZoneKey,
    zsk: Option<ZoneKey>,
    /// Per name (lowercase, no trailing dot).
    faults: HashMap<String, Fault>,
}

/// The public side of a signed zone, to write trust anchors from.
#[derive(Debug, Clone)]
pub struct ZoneKeys {
    pub zone: Name,
    /// The key-signing key (the only key with [`Keys::Combined`]).
    pub ksk: DNSKEY,
}

impl ZoneKeys {
    /// The key-signing key as a DNSKEY record in presentation format.
    pub fn dnskey_line(&self) -> String {
        format!("{} 3600 IN DNSKEY {}", self.zone.to_ascii(), self.ksk)
    }

    /// A DS record (SHA-256) of the key-signing key in presentation format.
    pub fn ds_line(&self) -> String {
        let digest = self.ksk.to_digest(&self.zone, DigestType::SHA256).expect("digest the key");
        let ds = DS::new(
            self.ksk.calculate_key_tag().unwrap(),
            self.ksk.algorithm(),
            DigestType::SHA256,
            digest.as_ref().to_vec(),
        );
        format!("{} 3600 IN DS {ds}", self.zone.to_ascii())
    }
}

/// A running server; it stops when the test's runtime ends.
#[derive(Debug, Clone)]
pub struct DnsServer {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl DnsServer {
    /// Starts a server answering for `names` (name → behaviour); unknown names get NXDOMAIN.
    pub async fn start(names: &[(&str, Behaviour)]) -> DnsServer {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind the test dns server"));
        let server = DnsServer { addr: socket.local_addr().unwrap(), state: Arc::default() };
        for (name, behaviour) in names {
            server.set(name, behaviour.clone());
        }
        let state = server.state.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((len, peer)) = socket.recv_from(&mut buf).await {
                let Ok(request) = Message::from_bytes(&buf[..len]) else { continue };
                let (delay, response) = respond(&state, &request);
                let socket = socket.clone();
                tokio::spawn(async move {
                    // The server's own slowness is what the test is about, not a wait for work.
                    if let Some(delay) = delay {
                        tokio::time::sleep(delay).await;
                    }
                    let _ = socket.send_to(&response.to_bytes().expect("encode a dns response"), peer).await;
                });
            }
        });
        server
    }

    /// Sets (or replaces) how `name` is answered.
    pub fn set(&self, name: &str, behaviour: Behaviour) {
        let key = name.trim_end_matches('.').to_ascii_lowercase();
        self.state.lock().unwrap().table.insert(key, behaviour);
    }

    /// Signs `zone` (and everything below it) with freshly generated keys; returns their
    /// public side. Replaces a zone signed before.
    pub fn sign(&self, zone: &str, keys: Keys) -> ZoneKeys {
        let zone = Name::from_ascii(format!("{}.", zone.trim_end_matches('.').to_ascii_lowercase())).unwrap();
        let ksk = ZoneKey::generate(257);
        let zsk = (keys == Keys::Split).then(|| ZoneKey::generate(256));
        let public = ZoneKeys { zone: zone.clone(), ksk: ksk.dnskey.clone() };
        self.state.lock().unwrap().signed = Some(Signed { zone, ksk, zsk, faults: HashMap::new() });
        public
    }

    /// Spoils the signatures of `name`'s answers (in the signed zone).
    pub fn fault(&self, name: &str, fault: Fault) {
        let key = name.trim_end_matches('.').to_ascii_lowercase();
        let mut state = self.state.lock().unwrap();
        state.signed.as_mut().expect("a signed zone").faults.insert(key, fault);
    }

    /// Every query received so far, in order.
    pub fn asked(&self) -> Vec<Asked> {
        self.state.lock().unwrap().log.clone()
    }

    /// The names asked so far (lowercase, absolute), without repeats.
    pub fn names_asked(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for asked in self.asked() {
            if !names.contains(&asked.name) {
                names.push(asked.name);
            }
        }
        names
    }

    /// How many queries of `kind` were received for `name`.
    pub fn count(&self, name: &str, kind: RecordType) -> usize {
        let name = format!("{}.", name.trim_end_matches('.').to_ascii_lowercase());
        self.asked().iter().filter(|a| a.name == name && a.kind == kind).count()
    }
}

/// The response to `request`, and how long to hold it back: the table's answer, signed when
/// the zone is and the request has the DO bit.
fn respond(state: &Mutex<State>, request: &Message) -> (Option<Duration>, Message) {
    let (delay, mut response) = answer(state, request);
    let dnssec_ok = request.extensions().as_ref().is_some_and(|edns| edns.flags().dnssec_ok);
    if let Some(edns) = request.extensions() {
        let mut echoed = Edns::new();
        echoed.set_max_payload(edns.max_payload().max(512)).set_dnssec_ok(dnssec_ok);
        response.set_edns(echoed);
    }
    let state = state.lock().unwrap();
    if let (true, Some(signed)) = (dnssec_ok, &state.signed) {
        let answers = response.take_answers();
        let mut signed_answers = Vec::with_capacity(answers.len() * 2);
        let mut rrsets: Vec<(Name, RecordType)> = Vec::new();
        for record in &answers {
            let set = (record.name().clone(), record.record_type());
            if !rrsets.contains(&set) {
                rrsets.push(set);
            }
        }
        for (owner, kind) in rrsets {
            let rrset: Vec<Record> =
                answers.iter().filter(|r| r.name() == &owner && r.record_type() == kind).cloned().collect();
            signed_answers.extend(rrset.iter().cloned());
            if !signed.zone.zone_of(&owner) {
                continue;
            }
            let key = owner.to_ascii().trim_end_matches('.').to_ascii_lowercase();
            let fault = signed.faults.get(&key).copied();
            let signer = match (&signed.zsk, kind) {
                (Some(zsk), kind) if kind != RecordType::DNSKEY => zsk,
                _ => &signed.ksk,
            };
            if let Some(rrsig) = rrsig(signer, &signed.zone, &owner, &rrset, fault) {
                signed_answers.push(rrsig);
            }
        }
        response.insert_answers(signed_answers);
    }
    (delay, response)
}

/// The RRSIG of `rrset` (owned by `owner`) by `key`, spoiled by `fault`; `None` when unsigned.
fn rrsig(key: &ZoneKey, zone: &Name, owner: &Name, rrset: &[Record], fault: Option<Fault>) -> Option<Record> {
    let now =
        u32::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs())
            .unwrap();
    let (inception, expiration) = match fault {
        Some(Fault::Unsigned) => return None,
        Some(Fault::Expired) => (now - 7_200, now - 3_600),
        _ => (now - 3_600, now + 3_600),
    };
    let ttl = rrset[0].ttl();
    let kind = rrset[0].record_type();
    let algorithm = key.dnskey.algorithm();
    let labels = owner.num_labels();
    let unsigned =
        RRSIG::new(kind, algorithm, labels, ttl, expiration, inception, key.tag, zone.clone(), Vec::new());
    let tbs = TBS::from_sig(owner, DNSClass::IN, &unsigned, rrset.iter()).expect("the data to sign");
    let mut signature = key.signer.sign(&tbs).expect("sign the rrset");
    if fault == Some(Fault::Tampered) {
        signature[10] ^= 0x5a;
    }
    let signed =
        RRSIG::new(kind, algorithm, labels, ttl, expiration, inception, key.tag, zone.clone(), signature);
    Some(Record::from_rdata(owner.clone(), ttl, RData::DNSSEC(DNSSECRData::RRSIG(signed))))
}

/// The table's answer to `request` (unsigned), and how long to hold it back.
fn answer(state: &Mutex<State>, request: &Message) -> (Option<Duration>, Message) {
    let mut response = Message::new();
    response
        .set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_authoritative(true)
        .set_recursion_desired(request.recursion_desired())
        .set_recursion_available(true);
    let Some(query) = request.queries().first().cloned() else {
        response.set_response_code(ResponseCode::FormErr);
        return (None, response);
    };
    response.add_query(query.clone());
    let mut state = state.lock().unwrap();
    let name = query.name().to_ascii().to_ascii_lowercase();
    state.log.push(Asked { name: name.clone(), kind: query.query_type() });
    let key = name.trim_end_matches('.').to_owned();
    let seen = {
        let count = state.seen.entry((key.clone(), query.query_type())).or_default();
        *count += 1;
        *count
    };
    if let Some(signed) = state.signed.as_ref().filter(|_| query.query_type() == RecordType::DNSKEY) {
        if signed.zone.eq_case(&query.name().to_lowercase()) {
            for key in std::iter::once(&signed.ksk).chain(&signed.zsk) {
                let data = RData::DNSSEC(DNSSECRData::DNSKEY(key.dnskey.clone()));
                response.add_answer(Record::from_rdata(signed.zone.clone(), 3_600, data));
            }
            response.set_response_code(ResponseCode::NoError);
            return (None, response);
        }
    }
    let mut delay = None;
    let mut owner = query.name().clone();
    let mut key = key;
    // Follows CNAMEs within the table, as a recursive resolver would.
    for _ in 0..8 {
        let Some(behaviour) = lookup(&state.table, &key) else {
            response.set_response_code(ResponseCode::NXDomain);
            return (delay, response);
        };
        let addrs = match behaviour {
            Behaviour::Cname(target) => {
                let target_name = Name::from_ascii(format!("{target}.")).unwrap();
                response.add_answer(Record::from_rdata(
                    owner.clone(),
                    60,
                    RData::CNAME(CNAME(target_name.clone())),
                ));
                owner = target_name;
                key = target.trim_end_matches('.').to_ascii_lowercase();
                continue;
            }
            Behaviour::NxDomain => {
                response.set_response_code(ResponseCode::NXDomain);
                return (delay, response);
            }
            Behaviour::ServFail => {
                response.set_response_code(ResponseCode::ServFail);
                return (delay, response);
            }
            Behaviour::Refused => {
                response.set_response_code(ResponseCode::Refused);
                return (delay, response);
            }
            Behaviour::NoRecords => Vec::new(),
            Behaviour::Records(records) => {
                for data in records.into_iter().filter(|d| d.record_type() == query.query_type()) {
                    response.add_answer(Record::from_rdata(owner.clone(), 300, data));
                }
                Vec::new()
            }
            Behaviour::ServFailOnce(_) if seen == 1 => {
                response.set_response_code(ResponseCode::ServFail);
                return (delay, response);
            }
            Behaviour::ServFailOnce(addrs) => addrs.iter().map(|&ip| (ip, 60)).collect(),
            Behaviour::Slow(wait, addrs) => {
                delay = Some(wait);
                addrs.iter().map(|&ip| (ip, 60)).collect()
            }
            Behaviour::Addrs { addrs, ttl } => addrs.iter().map(|&ip| (ip, ttl)).collect(),
            Behaviour::Rotating { mut addrs, ttl } => {
                if !addrs.is_empty() {
                    let by = (seen - 1) % addrs.len();
                    addrs.rotate_left(by);
                }
                addrs.into_iter().map(|ip| (ip, ttl)).collect()
            }
        };
        for (ip, ttl) in addrs {
            let data = match (ip, query.query_type()) {
                (IpAddr::V4(v4), RecordType::A) => RData::A(A(v4)),
                (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(v6)),
                _ => continue,
            };
            response.add_answer(Record::from_rdata(owner.clone(), ttl, data));
        }
        response.set_response_code(ResponseCode::NoError);
        return (delay, response);
    }
    response.set_response_code(ResponseCode::ServFail);
    (delay, response)
}

/// The behaviour for `key` (lowercase, no trailing dot): an exact entry, else the closest
/// `*.` wildcard above it.
fn lookup(table: &HashMap<String, Behaviour>, key: &str) -> Option<Behaviour> {
    if let Some(found) = table.get(key) {
        return Some(found.clone());
    }
    let mut rest = key;
    while let Some((_, parent)) = rest.split_once('.') {
        if let Some(found) = table.get(&format!("*.{parent}")) {
            return Some(found.clone());
        }
        rest = parent;
    }
    None
}

/// Shorthand for `Behaviour::Addrs` with a 300 s TTL.
pub fn addrs(list: &[&str]) -> Behaviour {
    Behaviour::Addrs { addrs: ips(list), ttl: 300 }
}

pub fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

/// A query for `name` as the resolver would send it (for the server's own sanity test).
fn query(name: &str, kind: RecordType) -> Message {
    let mut message = Message::new();
    message.set_id(7).add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
    message
}

#[tokio::test]
async fn the_test_server_answers_wildcards_cnames_and_failures() {
    let server = DnsServer::start(&[
        ("*.corp.test", addrs(&["127.0.0.3"])),
        ("a.test", Behaviour::Cname("b.test".into())),
        ("b.test", addrs(&["127.0.0.1", "::1"])),
        ("sf.test", Behaviour::ServFail),
    ])
    .await;
    let answer = |name: &str, kind| respond(&server.state, &query(name, kind)).1;
    let wild = answer("www.target.test.corp.test.", RecordType::A);
    assert_eq!(wild.answers().len(), 1);
    let chained = answer("a.test.", RecordType::AAAA);
    assert_eq!(chained.answers().len(), 2, "{chained:?}");
    assert_eq!(answer("nope.test.", RecordType::A).response_code(), ResponseCode::NXDomain);
    assert_eq!(answer("sf.test.", RecordType::A).response_code(), ResponseCode::ServFail);
    assert_eq!(server.count("a.test", RecordType::AAAA), 1);
}
