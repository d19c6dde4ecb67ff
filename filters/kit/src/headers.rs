//! A header map read once from the host, with values kept as bytes, and the
//! request parts filters look at: host, path, cookies and query parameters.

/// Header pairs in the order Envoy gave them. Names are lowercase in Envoy;
/// lookups still ignore ASCII case so tests and other hosts agree.
///
/// Names and values live back to back in one buffer (the host's wire data
/// itself when read from Envoy), so reading a map and cloning it cost two
/// allocations, not two per header.
#[derive(Clone, Default)]
pub struct Headers {
    buf: Vec<u8>,
    spans: Vec<Span>,
}

/// Where one pair's name and value are in `Headers::buf`. Names are UTF-8.
#[derive(Debug, Clone, Copy)]
struct Span {
    name: (usize, usize),
    value: (usize, usize),
}

impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|(n, v)| (n, String::from_utf8_lossy(v))))
            .finish()
    }
}

impl PartialEq for Headers {
    fn eq(&self, other: &Headers) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Headers {}

impl Headers {
    pub fn new() -> Headers {
        Headers::default()
    }

    pub fn from_pairs<N: Into<String>, V: Into<Vec<u8>>>(
        pairs: impl IntoIterator<Item = (N, V)>,
    ) -> Headers {
        let mut h = Headers::new();
        for (n, v) in pairs {
            h.push(n, v);
        }
        h
    }

    fn append(&mut self, bytes: &[u8]) -> (usize, usize) {
        let start = self.buf.len();
        self.buf.extend_from_slice(bytes);
        (start, bytes.len())
    }

    pub fn push(&mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) {
        let name = self.append(name.into().as_bytes());
        let value = self.append(&value.into());
        self.spans.push(Span { name, value });
    }

    /// Replaces every `name` with one `value`, added last, lowercased: what
    /// Envoy's `replace_header_map_value` does (`setCopy`).
    pub fn set(&mut self, name: &str, value: &[u8]) {
        self.remove(name);
        self.push(name.to_ascii_lowercase(), value);
    }

    /// Removes every `name`.
    pub fn remove(&mut self, name: &str) {
        let buf = &self.buf;
        self.spans
            .retain(|s| !slice(buf, s.name).eq_ignore_ascii_case(name.as_bytes()));
    }

    fn name_of(&self, s: &Span) -> &str {
        // Names are UTF-8 by construction; "" cannot happen.
        std::str::from_utf8(slice(&self.buf, s.name)).unwrap_or("")
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.spans
            .iter()
            .map(|s| (self.name_of(s), slice(&self.buf, s.value)))
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.get_all(name).next()
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a, 'n>(
        &'a self,
        name: &'n str,
    ) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
        let buf = &self.buf;
        self.spans
            .iter()
            .filter(move |s| slice(buf, s.name).eq_ignore_ascii_case(name.as_bytes()))
            .map(move |s| slice(buf, s.value))
    }

    /// The first value of `name` if it is UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// `:authority` (or `host`) without its port, as bytes.
    pub fn host(&self) -> Option<&[u8]> {
        self.get(":authority")
            .or_else(|| self.get("host"))
            .map(strip_port)
    }

    /// `:path` as sent, query included.
    pub fn path(&self) -> Option<&[u8]> {
        self.get(":path")
    }

    /// `:path` without its query string or fragment.
    pub fn path_without_query(&self) -> Option<&[u8]> {
        self.path().map(|p| {
            let end = p
                .iter()
                .position(|&b| b == b'?' || b == b'#')
                .unwrap_or(p.len());
            &p[..end]
        })
    }

    /// The value of the first cookie called `name`, over every `cookie`
    /// header (HTTP/2 may split them).
    pub fn cookie(&self, name: &str) -> Option<&[u8]> {
        self.get_all("cookie").find_map(|h| cookie_value(h, name))
    }

    /// The first query parameter called `name`, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<Vec<u8>> {
        let path = self.path()?;
        let start = path.iter().position(|&b| b == b'?')? + 1;
        let query = &path[start..];
        let query = match query.iter().position(|&b| b == b'#') {
            Some(end) => &query[..end],
            None => query,
        };
        query.split(|&b| b == b'&').find_map(|pair| {
            let (k, v) = match pair.iter().position(|&b| b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &pair[pair.len()..]),
            };
            (percent_decode(k) == name.as_bytes()).then(|| percent_decode(v))
        })
    }

    /// Parses the proxy-wasm map encoding: a little-endian `u32` count, then a
    /// `u32` key size and value size per pair, then each key and value followed
    /// by a NUL byte. `None` when the data is malformed; never panics.
    pub fn from_wire(bytes: &[u8]) -> Option<Headers> {
        Headers::from_wire_vec(bytes.to_vec())
    }

    /// [`Headers::from_wire`], keeping `bytes` as the buffer (no copy).
    pub fn from_wire_vec(bytes: Vec<u8>) -> Option<Headers> {
        if bytes.is_empty() {
            return Some(Headers::new());
        }
        let read_u32 = |at: usize| -> Option<usize> {
            let b = bytes.get(at..at.checked_add(4)?)?;
            Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        };
        let count = read_u32(0)?;
        let mut data = count.checked_mul(8)?.checked_add(4)?;
        // Each pair needs at least 8 size bytes and 2 NULs.
        if count > bytes.len() / 10 + 1 {
            return None;
        }
        let mut spans = Vec::with_capacity(count);
        let mut lossy = Vec::new();
        for i in 0..count {
            let key_len = read_u32(4 + i * 8)?;
            let value_len = read_u32(8 + i * 8)?;
            let key = bytes.get(data..data.checked_add(key_len)?)?;
            if std::str::from_utf8(key).is_err() {
                lossy.push(i);
            }
            let name = (data, key_len);
            data = data.checked_add(key_len + 1)?;
            bytes.get(data..data.checked_add(value_len)?)?;
            let value = (data, value_len);
            data = data.checked_add(value_len + 1)?;
            spans.push(Span { name, value });
        }
        let mut h = Headers { buf: bytes, spans };
        // Names are kept UTF-8: a rare non-UTF-8 name is stored lossily.
        for i in lossy {
            if let Some(span) = h.spans.get(i).copied() {
                let name = String::from_utf8_lossy(slice(&h.buf, span.name)).into_owned();
                let name = h.append(name.as_bytes());
                if let Some(s) = h.spans.get_mut(i) {
                    s.name = name;
                }
            }
        }
        Some(h)
    }
}

fn slice(buf: &[u8], (start, len): (usize, usize)) -> &[u8] {
    buf.get(start..start.saturating_add(len))
        .unwrap_or_default()
}

/// Encodes pairs in the proxy-wasm map encoding (see [`Headers::from_wire`]).
pub fn to_wire(pairs: &[(&str, &[u8])]) -> Vec<u8> {
    let size = 4 + pairs
        .iter()
        .map(|(n, v)| n.len() + v.len() + 10)
        .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (n, v) in pairs {
        out.extend_from_slice(&(n.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (n, v) in pairs {
        out.extend_from_slice(n.as_bytes());
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

/// `host:port`, `[v6]:port` or `host` to the host part.
fn strip_port(authority: &[u8]) -> &[u8] {
    if authority.first() == Some(&b'[') {
        return match authority.iter().position(|&b| b == b']') {
            Some(end) => &authority[..=end],
            None => authority,
        };
    }
    match authority.iter().rposition(|&b| b == b':') {
        Some(i) if authority[i + 1..].iter().all(u8::is_ascii_digit) => &authority[..i],
        _ => authority,
    }
}

fn cookie_value<'a>(header: &'a [u8], name: &str) -> Option<&'a [u8]> {
    header.split(|&b| b == b';').find_map(|part| {
        let part = part.trim_ascii();
        let eq = part.iter().position(|&b| b == b'=')?;
        (part[..eq].trim_ascii() == name.as_bytes()).then(|| {
            let v = part[eq + 1..].trim_ascii();
            // RFC 6265 allows a quoted value.
            match v {
                [b'"', inner @ .., b'"'] => inner,
                _ => v,
            }
        })
    })
}

/// Decodes `%XX` escapes and `+` (form encoding); a bad escape stays as is.
pub fn percent_decode(input: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'%' => match (
                input.get(i + 1).copied().and_then(hex),
                input.get(i + 2).copied().and_then(hex),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(pairs: &[(&str, &str)]) -> Headers {
        Headers::from_pairs(pairs.iter().map(|(n, v)| (*n, v.as_bytes())))
    }

    #[test]
    fn wire_round_trip_keeps_non_utf8_values() {
        let wire = to_wire(&[(":path", b"/a"), ("x-bin", &[0xff, 0xfe, 0x00, 0x41])]);
        let h = Headers::from_wire(&wire).unwrap();
        assert_eq!(h.get(":path"), Some(&b"/a"[..]));
        assert_eq!(h.get("x-bin"), Some(&[0xff, 0xfe, 0x00, 0x41][..]));
        assert_eq!(h.get_str("x-bin"), None);
    }

    #[test]
    fn malformed_wire_is_none_not_a_panic() {
        let wire = to_wire(&[("a", b"b"), ("c", b"d")]);
        // Any cut inside the data is detected (a missing final NUL is tolerated).
        for cut in 1..wire.len() - 1 {
            assert!(Headers::from_wire(&wire[..cut]).is_none(), "cut at {cut}");
        }
        assert!(Headers::from_wire(&[0xff, 0xff, 0xff, 0xff]).is_none());
        assert!(Headers::from_wire(&[1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]).is_none());
    }

    #[test]
    fn set_and_remove_follow_envoy() {
        let mut h = req(&[("a", "1"), ("X-V", "old"), ("b", "2"), ("x-v", "older")]);
        h.set("x-v", b"new");
        assert_eq!(
            h.iter().collect::<Vec<_>>(),
            vec![("a", &b"1"[..]), ("b", b"2"), ("x-v", b"new")]
        );
        h.remove("A");
        assert_eq!(h.len(), 2);
        assert_eq!(h, req(&[("b", "2"), ("x-v", "new")]));
        let clone = h.clone();
        h.push("c", b"3".to_vec());
        assert_ne!(h, clone);
    }

    #[test]
    fn non_utf8_names_are_kept_lossily() {
        let mut wire = to_wire(&[("ok", b"1"), ("nm", b"2")]);
        let at = wire.len() - 5;
        wire[at] = 0xff;
        let h = Headers::from_wire_vec(wire).unwrap();
        assert_eq!(h.get("ok"), Some(&b"1"[..]));
        assert_eq!(h.iter().nth(1), Some(("\u{fffd}m", &b"2"[..])));
    }

    #[test]
    fn host_strips_port() {
        assert_eq!(
            req(&[(":authority", "reviews:9080")]).host(),
            Some(&b"reviews"[..])
        );
        assert_eq!(
            req(&[(":authority", "[::1]:80")]).host(),
            Some(&b"[::1]"[..])
        );
        assert_eq!(req(&[("host", "a.b")]).host(), Some(&b"a.b"[..]));
    }

    #[test]
    fn cookies_across_headers_and_quotes() {
        let h = req(&[("cookie", "a=1; b=2"), ("cookie", "c=\"3\"")]);
        assert_eq!(h.cookie("b"), Some(&b"2"[..]));
        assert_eq!(h.cookie("c"), Some(&b"3"[..]));
        assert_eq!(h.cookie("d"), None);
        assert_eq!(req(&[("cookie", "ab=1")]).cookie("b"), None);
    }

    #[test]
    fn query_params_are_decoded() {
        let h = req(&[(":path", "/p?x=1&version=v%32&flag&y=a+b#frag")]);
        assert_eq!(h.query_param("version").as_deref(), Some(&b"v2"[..]));
        assert_eq!(h.query_param("flag").as_deref(), Some(&b""[..]));
        assert_eq!(h.query_param("y").as_deref(), Some(&b"a b"[..]));
        assert_eq!(h.query_param("z"), None);
        assert_eq!(h.path_without_query(), Some(&b"/p"[..]));
        assert_eq!(percent_decode(b"%zz%4"), b"%zz%4");
    }
}
