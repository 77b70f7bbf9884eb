//! Extra DNSSEC trust anchors (`dnssec_trust_anchors`): DNSKEY or DS records of private zones
//! and split-horizon views, trusted by `dns` checks with `dnssec` besides the root's keys.
//!
//! - The file is zone-file presentation format, the format of `dig DNSKEY`, of BIND's `.key`
//!   files and of `unbound-anchor`'s `root.key`: `owner [ttl] [IN] DNSKEY flags 3 alg base64`
//!   or `owner [ttl] [IN] DS tag alg digest-type hex`; `;` starts a comment and parentheses
//!   continue a record over lines. It is parsed completely at start; a bad line is an error
//!   naming the file and the line.
//! - hickory (0.25) trusts a DNSKEY when its public key is in its `TrustAnchors`, whatever
//!   the name it is served at, and otherwise asks the parent zone for a DS. A DNSKEY set with a
//!   key that is not an anchor (a zone-signing key beside the anchored key-signing key) or a
//!   DS anchor alone would send it to the parent, which a private zone does not have. So,
//!   for each check, [`TrustAnchorSet::keys_for`] proves the DNSKEY set of every anchored zone
//!   at or above the asked name, as RFC 4035 (5.2) does from a trust anchor: the set is asked
//!   (with the DO bit) from the check's name servers, and when one of its RRSIGs, inside its
//!   validity period, verifies with an anchored key (a DNSKEY anchor, or a key a DS anchor
//!   digests), every zone key of the set joins the check's trust anchors. hickory then
//!   validates the answer itself; a set that cannot be proven adds only the DNSKEY anchors,
//!   and hickory's verdict (bogus) stands.
//! - Anchors apply only to names at or below their zone, so a private zone's key never vouches
//!   for a public name.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hickory_resolver::config::{NameServerConfig, NameServerConfigGroup, ResolverOpts};
use hickory_resolver::name_server::{NameServerPool, TokioConnectionProvider};
use hickory_resolver::proto::dnssec::rdata::{DNSSECRData, DNSKEY, DS, RRSIG};
use hickory_resolver::proto::dnssec::{
    Algorithm, DigestType, PublicKey, PublicKeyBuf, TrustAnchors, Verifier,
};
use hickory_resolver::proto::op::Query;
use hickory_resolver::proto::rr::{DNSClass, RData, Record, RecordType};
use hickory_resolver::proto::xfer::{DnsHandle, DnsRequestOptions, FirstAnswer};
use hickory_resolver::Name;

/// What one anchor trusts.
#[derive(Debug, Clone)]
pub enum AnchorKind {
    /// This key.
    Key(DNSKEY),
    /// The key this DS record digests.
    Digest(DS),
}

/// One DNSKEY or DS record of the anchor file.
#[derive(Debug, Clone)]
pub struct Anchor {
    /// The zone it is the apex key of (absolute, lowercase).
    pub zone: Name,
    pub kind: AnchorKind,
}

/// The extra trust anchors of the agent; empty by default (the root's keys only).
#[derive(Debug, Clone, Default)]
pub struct TrustAnchorSet {
    anchors: Vec<Anchor>,
}

/// Why the trust anchor file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    #[error("dnssec_trust_anchors: cannot read {}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("dnssec_trust_anchors: {}, line {line}: {message}", path.display())]
    Line { path: PathBuf, line: usize, message: String },
    #[error("dnssec_trust_anchors: {} holds no DNSKEY or DS record", path.display())]
    Empty { path: PathBuf },
}

impl TrustAnchorSet {
    /// Reads and parses the anchor file at `path`. Errors name the file, and the line (from 1)
    /// of a record that is not a usable DNSKEY or DS; a file without any record is an error.
    pub fn load(path: &Path) -> Result<Self, AnchorError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| AnchorError::Read { path: path.to_owned(), source })?;
        let set = Self::parse(&text).map_err(|(line, message)| AnchorError::Line {
            path: path.to_owned(),
            line,
            message,
        })?;
        if set.is_empty() {
            return Err(AnchorError::Empty { path: path.to_owned() });
        }
        Ok(set)
    }

    /// Parses anchor records in presentation format. Errors: the line (from 1) where the bad
    /// record starts, and what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, (usize, String)> {
        let mut anchors = Vec::new();
        for entry in records(text)? {
            anchors.push(anchor(&entry.tokens).map_err(|message| (entry.line, message))?);
        }
        Ok(Self { anchors })
    }

    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }

    pub fn anchors(&self) -> &[Anchor] {
        &self.anchors
    }

    /// The anchored zones at or above `name`, deepest first, without repeats.
    fn zones_above(&self, name: &Name) -> Vec<Name> {
        let mut zones: Vec<Name> = Vec::new();
        for anchor in &self.anchors {
            if anchor.zone.zone_of(name) && !zones.contains(&anchor.zone) {
                zones.push(anchor.zone.clone());
            }
        }
        zones.sort_by_key(|z| std::cmp::Reverse(z.num_labels()));
        zones
    }

    /// The trust anchors for a check asking `name` at `servers`: the root's keys, the DNSKEY
    /// anchors of the zones at or above `name`, and the keys of each such zone's DNSKEY set
    /// proven by an anchor (asked within `timeout`). Also returns, per zone whose set could not
    /// be proven, why (for the check's failure detail).
    pub async fn keys_for(
        &self,
        name: &Name,
        servers: &[NameServerConfig],
        timeout: Duration,
    ) -> (Arc<TrustAnchors>, Vec<String>) {
        let mut keys = TrustAnchors::default();
        let mut unproven = Vec::new();
        let zones = self.zones_above(name);
        if zones.is_empty() {
            return (Arc::new(keys), unproven);
        }
        for anchor in &self.anchors {
            if let AnchorKind::Key(key) = &anchor.kind {
                if anchor.zone.zone_of(name) {
                    keys.insert(key.public_key());
                }
            }
        }
        let mut options = ResolverOpts::default();
        options.timeout = timeout;
        options.attempts = 1;
        let pool = NameServerPool::from_config(
            NameServerConfigGroup::from(servers.to_vec()),
            options,
            TokioConnectionProvider::default(),
        );
        for zone in zones {
            let anchors: Vec<&AnchorKind> =
                self.anchors.iter().filter(|a| a.zone == zone).map(|a| &a.kind).collect();
            match key_set(&pool, &zone, &anchors, timeout).await {
                Ok(set) => {
                    for key in set {
                        keys.insert(key.public_key());
                    }
                }
                Err(why) => {
                    tracing::debug!(zone = %zone, reason = %why, "dnssec trust anchor: key set not proven");
                    unproven.push(format!("the DNSKEY set of {zone} {why}"));
                }
            }
        }
        (Arc::new(keys), unproven)
    }
}

/// The zone keys of `zone`'s DNSKEY set, when an RRSIG over the set verifies with an anchored
/// key; otherwise why not.
async fn key_set(
    pool: &NameServerPool<TokioConnectionProvider>,
    zone: &Name,
    anchors: &[&AnchorKind],
    timeout: Duration,
) -> Result<Vec<DNSKEY>, String> {
    let mut options = DnsRequestOptions::default();
    options.use_edns = true;
    options.edns_set_dnssec_ok = true;
    let asked = pool.lookup(Query::query(zone.clone(), RecordType::DNSKEY), options).first_answer();
    let response = match tokio::time::timeout(timeout, asked).await {
        Err(_) => return Err("could not be fetched: timed out".into()),
        Ok(Err(error)) => return Err(format!("could not be fetched: {error}")),
        Ok(Ok(response)) => response,
    };
    let records: Vec<Record> = response
        .answers()
        .iter()
        .filter(|r| r.name() == zone && r.record_type() == RecordType::DNSKEY)
        .cloned()
        .collect();
    let set: Vec<DNSKEY> = records
        .iter()
        .filter_map(|r| match r.data() {
            RData::DNSSEC(DNSSECRData::DNSKEY(key)) => Some(key.clone()),
            _ => None,
        })
        .collect();
    if set.is_empty() {
        return Err("is empty".into());
    }
    let trusted: Vec<&DNSKEY> = set
        .iter()
        .filter(|key| key.zone_key() && !key.revoke())
        .filter(|key| anchors.iter().any(|anchor| vouches(anchor, zone, key)))
        .collect();
    if trusted.is_empty() {
        return Err("holds no key matching its trust anchor".into());
    }
    let now = u32::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs())
        .unwrap_or(u32::MAX);
    let signatures: Vec<&RRSIG> = response
        .answers()
        .iter()
        .filter(|r| r.name() == zone)
        .filter_map(|r| match r.data() {
            RData::DNSSEC(DNSSECRData::RRSIG(sig)) if sig.type_covered() == RecordType::DNSKEY => Some(sig),
            _ => None,
        })
        .collect();
    if signatures.is_empty() {
        return Err("is not signed".into());
    }
    let mut why = "is not signed by its anchored key";
    for sig in signatures {
        for key in &trusted {
            if key.algorithm() != sig.algorithm() || key.calculate_key_tag().ok() != Some(sig.key_tag()) {
                continue;
            }
            if !(sig.sig_inception().get() <= now && now <= sig.sig_expiration().get()) {
                why = "is signed by its anchored key outside the signature's validity period";
                continue;
            }
            if key.verify_rrsig(zone, DNSClass::IN, sig, records.iter()).is_ok() {
                return Ok(set.into_iter().filter(|k| k.zone_key() && !k.revoke()).collect());
            }
            why = "has a signature by its anchored key that does not verify";
        }
    }
    Err(why.into())
}

/// Whether `anchor` trusts `key` as a key of `zone`.
fn vouches(anchor: &AnchorKind, zone: &Name, key: &DNSKEY) -> bool {
    match anchor {
        AnchorKind::Key(anchored) => {
            anchored.algorithm() == key.algorithm()
                && anchored.public_key().public_bytes() == key.public_key().public_bytes()
        }
        AnchorKind::Digest(ds) => {
            ds.algorithm() == key.algorithm()
                && key.calculate_key_tag().ok() == Some(ds.key_tag())
                && ds.covers(zone, key).unwrap_or(false)
        }
    }
}

/// One record of the file: the line it starts on (from 1) and its words.
struct Entry {
    line: usize,
    tokens: Vec<String>,
}

/// The records of `text`: comments removed, parentheses joining lines, blank lines skipped.
/// Errors: the line and what is wrong with the parentheses.
fn records(text: &str) -> Result<Vec<Entry>, (usize, String)> {
    let mut out = Vec::new();
    // A record whose parenthesis is still open: where it started and its tokens so far.
    let mut pending: Option<Entry> = None;
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let content = raw.split(';').next().unwrap_or_default();
        let (start, mut tokens, mut open) = match pending.take() {
            Some(entry) => (entry.line, entry.tokens, true),
            None => (line, Vec::new(), false),
        };
        for word in content.replace('(', " ( ").replace(')', " ) ").split_whitespace() {
            match word {
                "(" if !open => open = true,
                "(" => return Err((line, "nested parentheses".into())),
                ")" if open => open = false,
                ")" => return Err((line, "a closing parenthesis without an opening one".into())),
                _ => tokens.push(word.to_owned()),
            }
        }
        if open {
            pending = Some(Entry { line: start, tokens });
        } else if !tokens.is_empty() {
            out.push(Entry { line: start, tokens });
        }
    }
    if let Some(entry) = pending {
        return Err((entry.line, "the parenthesis opened here is never closed".into()));
    }
    Ok(out)
}

/// One record's tokens as an anchor.
fn anchor(tokens: &[String]) -> Result<Anchor, String> {
    let owner = tokens.first().ok_or("an empty record")?;
    if owner.starts_with('$') {
        return Err(format!("directive {owner} is not supported: write every record with its owner name"));
    }
    let mut zone =
        Name::from_ascii(owner).map_err(|e| format!("owner {owner:?} is not a domain name: {e}"))?;
    zone.set_fqdn(true);
    let zone = zone.to_lowercase();
    let mut rest = &tokens[1..];
    // TTL and class, in either order, both optional.
    for _ in 0..2 {
        match rest.first().map(String::as_str) {
            Some(ttl) if ttl.bytes().all(|b| b.is_ascii_digit()) => rest = &rest[1..],
            Some(class) if class.eq_ignore_ascii_case("IN") => rest = &rest[1..],
            Some(class)
                if ["CH", "HS", "CS", "ANY", "NONE"].iter().any(|c| class.eq_ignore_ascii_case(c)) =>
            {
                return Err(format!("class {class} is not IN"));
            }
            _ => break,
        }
    }
    let (kind, data) = rest.split_first().ok_or("the record has no type (DNSKEY or DS)")?;
    let kind = if kind.eq_ignore_ascii_case("DNSKEY") {
        AnchorKind::Key(dnskey(data)?)
    } else if kind.eq_ignore_ascii_case("DS") {
        AnchorKind::Digest(ds(data)?)
    } else {
        return Err(format!("type {kind} is not DNSKEY or DS"));
    };
    Ok(Anchor { zone, kind })
}

fn number<T: std::str::FromStr>(data: &[String], index: usize, what: &str) -> Result<T, String> {
    let text = data.get(index).ok_or_else(|| format!("the {what} is missing"))?;
    text.parse().map_err(|_| format!("the {what} {text:?} is not a number in range"))
}

fn algorithm(data: &[String], index: usize) -> Result<Algorithm, String> {
    let value: u8 = number(data, index, "algorithm")?;
    let algorithm = Algorithm::from_u8(value);
    if !algorithm.is_supported() {
        return Err(format!(
            "algorithm {value} is not supported (supported: 5, 7, 8, 10 (RSA), 13, 14 (ECDSA), 15 (Ed25519))"
        ));
    }
    Ok(algorithm)
}

/// `flags protocol algorithm base64…`
fn dnskey(data: &[String]) -> Result<DNSKEY, String> {
    let flags: u16 = number(data, 0, "flags field")?;
    let protocol: u8 = number(data, 1, "protocol field")?;
    if protocol != 3 {
        return Err(format!("the protocol field is {protocol}, not 3"));
    }
    let algorithm = algorithm(data, 2)?;
    if data.len() < 4 {
        return Err("the public key is missing".into());
    }
    let encoded: String = data[3..].concat();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&encoded)
        .map_err(|e| format!("the public key is not base64: {e}"))?;
    let key = DNSKEY::with_flags(flags, PublicKeyBuf::new(bytes, algorithm));
    if !key.zone_key() {
        return Err(format!("flags {flags} lack the zone key bit (256): not a zone's key"));
    }
    if key.revoke() {
        return Err(format!("flags {flags} mark the key revoked"));
    }
    key.key().map_err(|e| format!("the public key is not a valid {algorithm} key: {e}"))?;
    Ok(key)
}

/// `key-tag algorithm digest-type hex…`
fn ds(data: &[String]) -> Result<DS, String> {
    let key_tag: u16 = number(data, 0, "key tag")?;
    let algorithm = algorithm(data, 1)?;
    let digest_type: u8 = number(data, 2, "digest type")?;
    let (digest_type, length) = match DigestType::from(digest_type) {
        DigestType::SHA1 => (DigestType::SHA1, 20),
        DigestType::SHA256 => (DigestType::SHA256, 32),
        DigestType::SHA384 => (DigestType::SHA384, 48),
        _ => {
            return Err(format!("digest type {digest_type} is not supported (1 SHA-1, 2 SHA-256, 4 SHA-384)"))
        }
    };
    if data.len() < 4 {
        return Err("the digest is missing".into());
    }
    let digest =
        hex::decode(data[3..].concat()).map_err(|e| format!("the digest is not hexadecimal: {e}"))?;
    if digest.len() != length {
        return Err(format!("the digest has {} bytes, not the {length} of its digest type", digest.len()));
    }
    Ok(DS::new(key_tag, algorithm, digest_type, digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// IANA's root KSK-2017 as `unbound-anchor` writes it (DS), and the same key as DNSKEY.
    const ROOT_DS: &str =
        ". 172800 IN DS 20326 8 2 E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D";

    #[test]
    fn records_in_presentation_format_parse() {
        let text = format!(
            "; a comment\n\n{ROOT_DS}\ncorp.internal. IN DNSKEY 257 3 15 ( 0fz4OBuBdKTCC+HRqa6TtTJ0jKFk\n\
             FT/TP/kBm5V6aOo= ) ; ksk\nLab.Test 3600 DS 1234 13 2 ( 0011223344556677 \n8899aabbccddeeff0011223344556677 8899aabbccddeeff )\n"
        );
        let set = TrustAnchorSet::parse(&text).unwrap();
        assert_eq!(set.anchors().len(), 3);
        assert!(set.anchors()[0].zone.is_root());
        assert!(matches!(&set.anchors()[0].kind, AnchorKind::Digest(ds) if ds.key_tag() == 20326));
        assert_eq!(set.anchors()[1].zone.to_ascii(), "corp.internal.");
        assert!(
            matches!(&set.anchors()[1].kind, AnchorKind::Key(k) if k.algorithm() == Algorithm::ED25519 && k.flags() == 257)
        );
        assert_eq!(set.anchors()[2].zone.to_ascii(), "lab.test.");
        let zones = set.zones_above(&Name::from_ascii("www.corp.internal.").unwrap());
        assert_eq!(zones.iter().map(Name::to_ascii).collect::<Vec<_>>(), ["corp.internal.", "."]);
    }

    #[test]
    fn a_bad_record_names_its_line_and_what_is_wrong() {
        let cases = [
            ("x. IN A 192.0.2.1", 1, "type A is not DNSKEY or DS"),
            ("\n\nx. IN DNSKEY 257 3 8 !!!notbase64", 3, "the public key is not base64"),
            ("x. DNSKEY 256 2 13 AAAA", 1, "the protocol field is 2, not 3"),
            ("x. DNSKEY 1 3 13 AAAA", 1, "lack the zone key bit"),
            ("x. DNSKEY 257 3 99 AAAA", 1, "algorithm 99 is not supported"),
            ("x. DNSKEY 257 3 13 AAAA", 1, "not a valid"),
            ("x. DS 1 8 2 abcd", 1, "the digest has 2 bytes, not the 32"),
            ("x. DS 1 8 3 abcd", 1, "digest type 3 is not supported"),
            ("x. DS 70000 8 2 abcd", 1, "the key tag \"70000\" is not a number in range"),
            ("x. CH DS 1 8 2 abcd", 1, "class CH is not IN"),
            ("$ORIGIN corp.", 1, "directive $ORIGIN is not supported"),
            ("; ok\nx. DS ( 1 8 2\n", 2, "never closed"),
            ("x. DS 1 8 2 abcd )", 1, "closing parenthesis"),
        ];
        for (text, line, message) in cases {
            let (at, error) = TrustAnchorSet::parse(text).unwrap_err();
            assert_eq!(at, line, "{text}: {error}");
            assert!(error.contains(message), "{text}: {error}");
        }
    }

    #[test]
    fn the_file_errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("anchors-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("anchors.zone");
        std::fs::write(&path, format!("{ROOT_DS}\nbad. IN DS 1\n")).unwrap();
        let error = TrustAnchorSet::load(&path).unwrap_err().to_string();
        assert_eq!(
            error,
            format!("dnssec_trust_anchors: {}, line 2: the algorithm is missing", path.display())
        );
        std::fs::write(&path, "; nothing\n").unwrap();
        assert!(TrustAnchorSet::load(&path)
            .unwrap_err()
            .to_string()
            .contains("holds no DNSKEY or DS record"));
        let missing = TrustAnchorSet::load(&dir.join("absent")).unwrap_err();
        let said = shared::error::Chain(&missing).to_string();
        assert!(said.starts_with("dnssec_trust_anchors: cannot read "), "{said}");
        assert!(said.contains("No such file"), "the cause is said: {said}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
