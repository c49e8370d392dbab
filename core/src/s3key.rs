//! S3 object keys as they arrive in event notifications, and what CloudTrail's key layout says.

/// Decodes a key from an S3 event notification: `+` is a space, then percent-decoding, the way
/// S3 encodes them (`noog+nork` is `noog nork`, `noog%2Bnork` is `noog+nork`). Never trust an
/// event's `urlDecodedKey`; AWS does not send one. Invalid escapes are kept as written.
pub fn decode_event_key(raw: &str) -> String {
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hexval(b[i + 1]), hexval(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn hexval(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// What a CloudTrail delivery key (`[prefix/]AWSLogs/[o-org/]<account>/CloudTrail/<region>/YYYY/MM/DD/file`)
/// says about its records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyHints {
    pub account_id: Option<String>,
    pub region: Option<String>,
    /// `CloudTrail-Digest/` objects hold hashes, not records.
    pub is_digest: bool,
    /// `CloudTrail-Insight/` objects hold Insights events, not API calls.
    pub is_insight: bool,
}

/// Reads the account and region from a CloudTrail key, if it follows AWS's layout.
pub fn cloudtrail_key_hints(key: &str) -> KeyHints {
    let parts: Vec<&str> = key.split('/').collect();
    let mut hints = KeyHints::default();
    let Some(awslogs) = parts.iter().position(|p| *p == "AWSLogs") else {
        hints.is_digest = parts.contains(&"CloudTrail-Digest");
        return hints;
    };
    let mut i = awslogs + 1;
    // Organization trails add the organization id: AWSLogs/o-abc123/<account>/...
    if parts.get(i).is_some_and(|p| p.starts_with("o-"))
        && parts.get(i + 1).is_some_and(|p| crate::lake::is_account_id(p))
    {
        i += 1;
    }
    if let Some(acct) = parts.get(i).filter(|p| crate::lake::is_account_id(p)) {
        hints.account_id = Some(acct.to_string());
        match parts.get(i + 1).copied() {
            Some("CloudTrail-Digest") => hints.is_digest = true,
            Some("CloudTrail-Insight") => hints.is_insight = true,
            _ => {}
        }
        if let Some(region) = parts.get(i + 2).filter(|r| crate::lake::is_region(r)) {
            hints.region = Some(region.to_string());
        }
    }
    hints
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_like_s3_encodes() {
        assert_eq!(decode_event_key("noog+nork"), "noog nork");
        assert_eq!(decode_event_key("noog%2bnork"), "noog+nork");
        assert_eq!(decode_event_key("a%2Fb%20c"), "a/b c");
        assert_eq!(decode_event_key("bad%zzescape%"), "bad%zzescape%");
        assert_eq!(decode_event_key("%"), "%");
        assert_eq!(decode_event_key("x%4"), "x%4");
        assert_eq!(decode_event_key("caf%C3%A9"), "café");
    }

    #[test]
    fn reads_cloudtrail_keys() {
        let h = cloudtrail_key_hints("AWSLogs/o-aa111bb222/012345678901/CloudTrail/eu-west-1/2024/01/02/012345678901_CloudTrail_eu-west-1_20240102T0000Z_abc.json.gz");
        assert_eq!(h.account_id.as_deref(), Some("012345678901"));
        assert_eq!(h.region.as_deref(), Some("eu-west-1"));
        assert!(!h.is_digest);
        let h = cloudtrail_key_hints("prefix/AWSLogs/111122223333/CloudTrail-Digest/us-east-2/2015/08/20/x.json.gz");
        assert!(h.is_digest);
        assert_eq!(cloudtrail_key_hints("random/file.json"), KeyHints::default());
    }
}
