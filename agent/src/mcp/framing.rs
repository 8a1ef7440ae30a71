//! Reassembly of captured bytes into messages, per channel and direction:
//! newline-delimited JSON (MCP stdio) and HTTP/1.1 (Streamable HTTP and legacy SSE:
//! headers and body in separate syscalls, chunked bodies, SSE events,
//! case-insensitive headers). Memory per stream is bounded; anything that does not
//! parse resets the stream and is counted, never a panic.

/// Largest message kept in reassembly; a longer one is dropped as `oversize`.
pub const MAX_MESSAGE: usize = 256 * 1024;

/// Why bytes were discarded (low-cardinality, for a counter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Discard {
    /// The kernel copied only a prefix of a call: the rest of that message is lost.
    Gap,
    Oversize,
    BadHttp,
}

impl Discard {
    pub fn reason(self) -> &'static str {
        match self {
            Self::Gap => "capture_gap",
            Self::Oversize => "oversize",
            Self::BadHttp => "bad_http",
        }
    }
}

/// A frame that could not be kept whole: longer than [`MAX_MESSAGE`], or cut by the
/// kernel's copy. Its first bytes and its size (the bytes the writer sent: for a cut
/// call, the part copied and the part the kernel said was left).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CutFrame {
    pub head: Vec<u8>,
    pub size: usize,
}

/// Bytes of a cut frame kept to name the message (its id, method, result or error).
const CUT_HEAD: usize = 512;

/// Newline-delimited frames (a trailing `\r` is stripped, as the TS SDK does).
#[derive(Default)]
pub struct LineFramer {
    buf: Vec<u8>,
    /// An oversize frame being skipped, reported when it ends.
    oversize: Option<CutFrame>,
    cuts: Vec<CutFrame>,
    /// Bytes are missing before the next newline: skip to it (unless the next call
    /// starts a message).
    resync: bool,
}

impl LineFramer {
    #[cfg(test)]
    pub fn push(&mut self, data: &[u8], truncated: bool) -> (Vec<Vec<u8>>, Option<Discard>) {
        self.push_call(data, truncated, 0)
    }

    /// The frames cut since the last call, oldest first.
    pub fn take_cuts(&mut self) -> Vec<CutFrame> {
        std::mem::take(&mut self.cuts)
    }

    fn end_oversize(&mut self) {
        if let Some(c) = self.oversize.take() {
            self.cuts.push(c);
        }
    }

    /// Appends one captured call (`missing`: bytes of it the kernel did not copy);
    /// returns complete lines and any discard. Frames that could not be kept whole
    /// are in [`take_cuts`](Self::take_cuts).
    pub fn push_call(
        &mut self,
        data: &[u8],
        truncated: bool,
        missing: usize,
    ) -> (Vec<Vec<u8>>, Option<Discard>) {
        let mut out = Vec::new();
        let mut discard = None;
        let mut rest = data;
        // A call that starts like a message after a cut one is the next message
        // (both SDKs write one message per call), not the cut one's tail; a
        // continuation that happens to start with `{` fails to parse and is counted.
        if self.resync && matches!(rest.first(), Some(b'{' | b'[')) {
            self.end_oversize();
            self.resync = false;
        }
        if self.resync {
            match rest.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    if let Some(c) = &mut self.oversize {
                        c.size += i;
                    }
                    self.end_oversize();
                    rest = &rest[i + 1..];
                    self.resync = false;
                }
                None => {
                    if let Some(c) = &mut self.oversize {
                        c.size += rest.len() + missing;
                    }
                    return (out, None);
                }
            }
        }
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            self.buf.extend_from_slice(&rest[..i]);
            let mut line = std::mem::take(&mut self.buf);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if !line.iter().all(u8::is_ascii_whitespace) {
                out.push(line);
            }
            rest = &rest[i + 1..];
        }
        self.buf.extend_from_slice(rest);
        let head = |buf: &[u8]| buf[..buf.len().min(CUT_HEAD)].to_vec();
        if truncated {
            // The call's tail was not copied: the current frame cannot be completed.
            // Writers end a message with its call, so its size is known now.
            if !self.buf.is_empty() {
                self.cuts.push(CutFrame {
                    head: head(&self.buf),
                    size: self.buf.len() + missing,
                });
            }
            self.buf.clear();
            self.resync = true;
            discard = Some(Discard::Gap);
        } else if self.buf.len() > MAX_MESSAGE {
            self.oversize = Some(CutFrame {
                head: head(&self.buf),
                size: self.buf.len(),
            });
            self.buf.clear();
            self.resync = true;
            discard = Some(Discard::Oversize);
        }
        (out, discard)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpStart {
    Request { method: String, path: String },
    Response { status: u16 },
}

/// One HTTP message head, or one event of an SSE body, as it completes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpItem {
    /// A complete message with a (de-chunked) body; for SSE responses the body is
    /// delivered as `Sse` items instead and `body` is empty.
    Message {
        start: HttpStart,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    Sse {
        event: Option<String>,
        data: String,
    },
}

enum Body {
    None,
    Length(usize),
    Chunked,
    /// Read until the connection ends (responses without length).
    UntilClose,
}

enum State {
    Head,
    Body {
        start: HttpStart,
        headers: Vec<(String, String)>,
        body: Body,
        sse: bool,
        got: Vec<u8>,
    },
}

pub struct HttpStream {
    buf: Vec<u8>,
    state: State,
    /// Chunked decoding: bytes still expected in the current chunk.
    chunk_left: Option<usize>,
    sse_buf: String,
}

impl Default for HttpStream {
    fn default() -> Self {
        Self {
            buf: Vec::new(),
            state: State::Head,
            chunk_left: None,
            sse_buf: String::new(),
        }
    }
}

const MAX_HEADERS: usize = 64;

pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

impl HttpStream {
    pub fn push(&mut self, data: &[u8], truncated: bool) -> (Vec<HttpItem>, Option<Discard>) {
        let mut out = Vec::new();
        self.buf.extend_from_slice(data);
        let mut discard = None;
        loop {
            match self.step(&mut out) {
                Ok(true) => continue,
                Ok(false) => break,
                Err(d) => {
                    discard = Some(d);
                    self.reset();
                    break;
                }
            }
        }
        if truncated {
            // Part of this call is missing; whatever was mid-flight cannot be trusted.
            if !matches!(self.state, State::Head) || !self.buf.is_empty() {
                discard = Some(Discard::Gap);
            }
            self.reset();
        } else if self.buf.len() > MAX_MESSAGE {
            discard = Some(Discard::Oversize);
            self.reset();
        }
        (out, discard)
    }

    fn reset(&mut self) {
        self.buf.clear();
        self.state = State::Head;
        self.chunk_left = None;
        self.sse_buf.clear();
    }

    /// Makes progress; Ok(true) if it consumed something and may continue.
    fn step(&mut self, out: &mut Vec<HttpItem>) -> Result<bool, Discard> {
        match &mut self.state {
            State::Head => {
                if self.buf.is_empty() {
                    return Ok(false);
                }
                let mut hdrs = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let (start, headers, n) = if self.buf.starts_with(b"HTTP/") {
                    let mut resp = httparse::Response::new(&mut hdrs);
                    match resp.parse(&self.buf) {
                        Ok(httparse::Status::Complete(n)) => {
                            let start = HttpStart::Response {
                                status: resp.code.unwrap_or(0),
                            };
                            (start, collect(resp.headers), n)
                        }
                        Ok(httparse::Status::Partial) => return Ok(false),
                        Err(_) => return Err(Discard::BadHttp),
                    }
                } else {
                    let mut req = httparse::Request::new(&mut hdrs);
                    match req.parse(&self.buf) {
                        Ok(httparse::Status::Complete(n)) => {
                            let start = HttpStart::Request {
                                method: req.method.unwrap_or_default().to_string(),
                                path: req.path.unwrap_or_default().to_string(),
                            };
                            (start, collect(req.headers), n)
                        }
                        Ok(httparse::Status::Partial) => return Ok(false),
                        Err(_) => return Err(Discard::BadHttp),
                    }
                };
                self.buf.drain(..n);
                let sse =
                    header(&headers, "content-type").is_some_and(|v| v.starts_with("text/event-stream"));
                let chunked = header(&headers, "transfer-encoding")
                    .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
                let length = header(&headers, "content-length").and_then(|v| v.trim().parse::<usize>().ok());
                let is_response = matches!(start, HttpStart::Response { .. });
                let body = if chunked {
                    Body::Chunked
                } else if let Some(l) = length {
                    Body::Length(l)
                } else if is_response && (sse || !matches!(start, HttpStart::Response { status: 204 | 304 }))
                {
                    Body::UntilClose
                } else {
                    Body::None
                };
                if sse {
                    // The head is news on its own: an SSE response never "completes".
                    out.push(HttpItem::Message {
                        start: start.clone(),
                        headers: headers.clone(),
                        body: Vec::new(),
                    });
                }
                if matches!(body, Body::None | Body::Length(0)) {
                    if !sse {
                        out.push(HttpItem::Message {
                            start,
                            headers,
                            body: Vec::new(),
                        });
                    }
                    return Ok(true);
                }
                self.chunk_left = None;
                self.state = State::Body {
                    start,
                    headers,
                    body,
                    sse,
                    got: Vec::new(),
                };
                Ok(true)
            }
            State::Body { body, sse, got, .. } => {
                let sse = *sse;
                let progressed = match body {
                    Body::Length(l) => {
                        let take = (*l - got.len()).min(self.buf.len());
                        got.extend(self.buf.drain(..take));
                        take > 0
                    }
                    Body::UntilClose => {
                        let took = !self.buf.is_empty();
                        got.append(&mut self.buf);
                        took
                    }
                    Body::Chunked => dechunk(&mut self.buf, &mut self.chunk_left, got)?,
                    Body::None => false,
                };
                if got.len() > MAX_MESSAGE {
                    return Err(Discard::Oversize);
                }
                let done = match body {
                    Body::Length(l) => got.len() >= *l,
                    Body::Chunked => self.chunk_left == Some(usize::MAX),
                    _ => false,
                };
                if sse {
                    let text = String::from_utf8_lossy(&std::mem::take(got)).into_owned();
                    self.sse_buf.push_str(&text);
                    out.extend(sse_events(&mut self.sse_buf));
                }
                if done {
                    let State::Body {
                        start, headers, got, ..
                    } = std::mem::replace(&mut self.state, State::Head)
                    else {
                        unreachable!()
                    };
                    self.chunk_left = None;
                    if !sse {
                        out.push(HttpItem::Message {
                            start,
                            headers,
                            body: got,
                        });
                    }
                    return Ok(true);
                }
                Ok(progressed && !self.buf.is_empty())
            }
        }
    }
}

fn collect(h: &[httparse::Header<'_>]) -> Vec<(String, String)> {
    h.iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).trim().to_string(),
            )
        })
        .collect()
}

/// Moves de-chunked bytes from `buf` to `out`. `left`: None = expecting a size line,
/// Some(n) = n data bytes of the current chunk to go, Some(MAX) = final chunk seen.
fn dechunk(buf: &mut Vec<u8>, left: &mut Option<usize>, out: &mut Vec<u8>) -> Result<bool, Discard> {
    let mut progressed = false;
    loop {
        match *left {
            Some(usize::MAX) => return Ok(progressed),
            None => {
                let Some(i) = buf.windows(2).position(|w| w == b"\r\n") else {
                    return Ok(progressed);
                };
                let line = String::from_utf8_lossy(&buf[..i]).into_owned();
                let size_text = line.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size_text, 16).map_err(|_| Discard::BadHttp)?;
                buf.drain(..i + 2);
                progressed = true;
                *left = if size == 0 {
                    Some(usize::MAX)
                } else {
                    Some(size + 2)
                }; // data + CRLF
            }
            Some(n) => {
                if buf.is_empty() {
                    return Ok(progressed);
                }
                let take = n.min(buf.len());
                let data_left = n.saturating_sub(2);
                let data_take = take.min(data_left);
                out.extend_from_slice(&buf[..data_take]);
                buf.drain(..take);
                progressed = true;
                *left = if take == n { None } else { Some(n - take) };
            }
        }
    }
}

/// Complete SSE events (blank-line terminated, LF or CRLF) taken from `buf`.
fn sse_events(buf: &mut String) -> Vec<HttpItem> {
    let mut out = Vec::new();
    loop {
        let normalized = buf.replace("\r\n", "\n");
        let Some(end) = normalized.find("\n\n") else {
            *buf = normalized;
            return out;
        };
        let block = &normalized[..end];
        let mut event = None;
        let mut data = Vec::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                event = Some(v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push(v.strip_prefix(' ').unwrap_or(v).to_string());
            }
        }
        if event.is_some() || !data.is_empty() {
            out.push(HttpItem::Sse {
                event,
                data: data.join("\n"),
            });
        }
        *buf = normalized[end + 2..].to_string();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_across_calls_and_crlf() {
        let mut f = LineFramer::default();
        let (l, _) = f.push(b"{\"a\":1}\n{\"b\"", false);
        assert_eq!(l, vec![b"{\"a\":1}".to_vec()]);
        let (l, _) = f.push(b":2}\r\n\n", false);
        assert_eq!(l, vec![b"{\"b\":2}".to_vec()]);
    }

    #[test]
    fn a_gap_skips_to_the_next_frame() {
        let mut f = LineFramer::default();
        let (l, d) = f.push(b"{\"big\":\"aaaa", true);
        assert!(l.is_empty());
        assert_eq!(d, Some(Discard::Gap));
        let (l, _) = f.push(b"aaaa\"}\n{\"ok\":1}\n", false);
        assert_eq!(l, vec![b"{\"ok\":1}".to_vec()]);
    }

    #[test]
    fn cut_frames_are_reported_with_their_head_and_size() {
        let mut f = LineFramer::default();
        // The kernel copied 10 bytes of a 1 000-byte call.
        let (_, d) = f.push_call(b"{\"id\":7,\"r", true, 990);
        assert_eq!(d, Some(Discard::Gap));
        assert_eq!(
            f.take_cuts(),
            [CutFrame {
                head: b"{\"id\":7,\"r".to_vec(),
                size: 1000
            }]
        );
        // A frame longer than MAX_MESSAGE, in whole calls: reported when it ends.
        let mut long = vec![b'{'];
        long.extend_from_slice(&[b'x'; MAX_MESSAGE]);
        let (_, d) = f.push_call(&long, false, 0);
        assert_eq!(d, Some(Discard::Oversize));
        assert!(f.take_cuts().is_empty());
        let (l, _) = f.push_call(b"yyy\n{}\n", false, 0);
        assert_eq!(l, vec![b"{}".to_vec()]);
        let cuts = f.take_cuts();
        assert_eq!(cuts.len(), 1);
        assert_eq!(cuts[0].size, MAX_MESSAGE + 4);
        assert_eq!(cuts[0].head.len(), CUT_HEAD);
    }

    /// A writer that sends one message per call (both SDKs): the call after a cut one
    /// starts a message of its own, which must not be skipped as the cut one's tail.
    #[test]
    fn a_call_after_a_gap_that_starts_a_message_is_framed() {
        let mut f = LineFramer::default();
        let (_, d) = f.push(b"{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"tools\":[", true);
        assert_eq!(d, Some(Discard::Gap));
        let (l, _) = f.push(b"{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{}}\n", false);
        assert_eq!(l, vec![b"{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{}}".to_vec()]);
    }

    #[test]
    fn http_request_head_and_body_in_separate_calls() {
        let mut h = HttpStream::default();
        let (items, _) = h.push(
            b"POST /mcp HTTP/1.1\r\nHost: x\r\nMcp-Method: initialize\r\ncontent-type: application/json\r\nContent-Length: 7\r\n\r\n",
            false,
        );
        assert!(items.is_empty());
        let (items, _) = h.push(b"{\"a\":1}", false);
        let [HttpItem::Message { start, headers, body }] = &items[..] else {
            panic!("{items:?}")
        };
        assert_eq!(
            start,
            &HttpStart::Request {
                method: "POST".into(),
                path: "/mcp".into()
            }
        );
        assert_eq!(header(headers, "mcp-method"), Some("initialize"));
        assert_eq!(body, b"{\"a\":1}");
    }

    #[test]
    fn chunked_sse_response() {
        let mut h = HttpStream::default();
        let head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nmcp-session-id: abc\r\nTransfer-Encoding: chunked\r\n\r\n";
        let (items, _) = h.push(head, false);
        assert!(matches!(
            &items[..],
            [HttpItem::Message {
                start: HttpStart::Response { status: 200 },
                ..
            }]
        ));
        let chunk = |data: &str| format!("{:x}\r\n{data}\r\n", data.len()).into_bytes();
        let (items, _) = h.push(
            &chunk("id: 607fc0bb-aaaa-bbbb-cccc-0123456789ab\ndata: \n\n"),
            false,
        );
        assert!(items.iter().all(|i| matches!(i, HttpItem::Sse { .. })));
        let (items, _) = h.push(
            &chunk("event: message\ndata: {\"result\":{},\"id\":1}\n\n"),
            false,
        );
        assert_eq!(
            items,
            vec![HttpItem::Sse {
                event: Some("message".into()),
                data: "{\"result\":{},\"id\":1}".into()
            }]
        );
    }

    #[test]
    fn legacy_sse_endpoint_event_with_crlf() {
        let mut h = HttpStream::default();
        let (items, _) = h.push(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n\r\nevent: endpoint\r\ndata: /messages/?session_id=4d05\r\n\r\n",
            false,
        );
        assert_eq!(items.len(), 2);
        assert_eq!(
            items[1],
            HttpItem::Sse {
                event: Some("endpoint".into()),
                data: "/messages/?session_id=4d05".into()
            }
        );
    }

    #[test]
    fn garbage_http_is_discarded_not_fatal() {
        let mut h = HttpStream::default();
        let (_, d) = h.push(b"POST /\x01\x02 HTTP/9\r\n\x00\r\n\r\n", false);
        assert_eq!(d, Some(Discard::BadHttp));
        let (items, _) = h.push(b"GET /sse HTTP/1.1\r\nhost: a\r\n\r\n", false);
        assert_eq!(items.len(), 1);
        // Bad chunk sizes too.
        let mut h = HttpStream::default();
        let (_, d) = h.push(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            false,
        );
        assert_eq!(d, Some(Discard::BadHttp));
    }

    #[test]
    fn random_bytes_never_panic_and_stay_bounded() {
        let mut seed = 0x1234_5678_u64;
        for _ in 0..2000 {
            let mut h = HttpStream::default();
            let mut f = LineFramer::default();
            for _ in 0..8 {
                let len = (seed % 300) as usize;
                let data: Vec<u8> = (0..len)
                    .map(|_| {
                        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                        b"HTTP/1.1 200\r\n:{}chunked 0a\n"[(seed >> 59) as usize % 22]
                    })
                    .collect();
                let _ = h.push(&data, seed.is_multiple_of(7));
                let _ = f.push(&data, seed.is_multiple_of(5));
                assert!(h.buf.len() <= MAX_MESSAGE && f.buf.len() <= MAX_MESSAGE);
            }
        }
    }
}
