//! Finding the token in a request. A rule's providers name where their tokens
//! travel (a header with an optional scheme prefix, a query parameter, a
//! cookie); the locations are tried in that order and the first one holding a
//! token decides. The location is returned with the token so that, once the
//! token is accepted, the same place can be cleaned of it.

use crate::config::Location;
use kit::Headers;

/// Finds the token in the first location that holds one. The prefix is
/// compared as bytes (slicing text there could split a character), and a
/// token that is not UTF-8 is still a token: it fails the parse and is
/// refused, rather than counting as missing (which would let an `optional`
/// rule pass it, or a later location decide while it reaches the upstream).
pub(crate) fn find_token(h: &Headers, locations: &[&Location]) -> Option<(String, Location)> {
    for loc in locations {
        let found = match loc {
            Location::Header { name, prefix } => h.get(name).and_then(|v| {
                let prefix = prefix.as_bytes();
                let t = v
                    .get(..prefix.len())
                    .filter(|head| head.eq_ignore_ascii_case(prefix))
                    .map(|_| &v[prefix.len()..])?;
                Some(String::from_utf8_lossy(t).trim().to_string())
            }),
            Location::Param(name) => h
                .query_param(name)
                .map(|v| String::from_utf8_lossy(&v).into_owned()),
            Location::Cookie(name) => h
                .cookie(name)
                .map(|v| String::from_utf8_lossy(v).into_owned()),
        };
        if let Some(t) = found.filter(|t| !t.is_empty()) {
            return Some((t, (*loc).clone()));
        }
    }
    None
}
