//! A small reader of server-sent events for the tests: it reads a streaming answer's bytes as
//! they come and splits them into frames (`event:`, `id:`, `data:` lines, or a `:` comment).

use std::time::Duration;

use serde_json::Value;

/// The longest a test waits for the next frame before it fails.
const FRAME_WAIT: Duration = Duration::from_secs(30);

/// One frame of the stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Event(SseEvent),
    /// A `:` line, such as a keep-alive (without the colon and the space after it).
    Comment(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    /// The `data:` lines, joined and parsed as JSON.
    pub data: Value,
}

impl SseEvent {
    /// The `id:` as a number (a lock's index).
    pub fn index(&self) -> u64 {
        self.id
            .as_deref()
            .expect("the event has an id")
            .parse()
            .expect("a numeric id")
    }
}

pub struct SseReader {
    response: reqwest::Response,
    buffer: String,
}

impl SseReader {
    /// Reads the stream of a 200 `text/event-stream` answer (fails the test on any other).
    pub async fn new(response: reqwest::Response) -> Self {
        let status = response.status();
        let ct = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        if status != 200 {
            panic!("{status}: {}", response.text().await.unwrap_or_default());
        }
        assert_eq!(ct.as_deref(), Some("text/event-stream"));
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// Opens `url` (with `Last-Event-ID: last_id` if given) and reads its stream.
    pub async fn open(http: &reqwest::Client, url: &str, last_id: Option<u64>) -> Self {
        Self::new(send(http, url, last_id).await).await
    }

    /// The next frame, or `None` once the server ended the stream. Fails the test if none comes
    /// within [`FRAME_WAIT`].
    pub async fn next_frame(&mut self) -> Option<Frame> {
        tokio::time::timeout(FRAME_WAIT, self.read_frame())
            .await
            .expect("a frame (or the stream's end) in time")
    }

    /// The next event, skipping comments; `None` at the end of the stream.
    pub async fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            match self.next_frame().await? {
                Frame::Event(e) => return Some(e),
                Frame::Comment(_) => continue,
            }
        }
    }

    /// The next event, which must come and be of `kind`.
    pub async fn expect(&mut self, kind: &str) -> SseEvent {
        let event = self.next_event().await.expect("an event, not the end");
        assert_eq!(event.event, kind, "{event:?}");
        event
    }

    /// Whether the stream ends (rather than sending anything more) within [`FRAME_WAIT`].
    pub async fn ends(&mut self) -> bool {
        self.next_frame().await.is_none()
    }

    async fn read_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let text: String = self.buffer.drain(..end + 2).collect();
                if let Some(frame) = parse(&text) {
                    return Some(frame);
                }
                continue;
            }
            match self.response.chunk().await {
                Ok(Some(bytes)) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
                Ok(None) | Err(_) => return None,
            }
        }
    }
}

/// `GET url`, with `Last-Event-ID` if given.
pub async fn send(http: &reqwest::Client, url: &str, last_id: Option<u64>) -> reqwest::Response {
    let mut req = http.get(url);
    if let Some(id) = last_id {
        req = req.header("last-event-id", id.to_string());
    }
    req.send().await.expect("the server answers")
}

fn parse(text: &str) -> Option<Frame> {
    let (mut event, mut id, mut data) = (None, None, Vec::new());
    for line in text.lines().filter(|l| !l.is_empty()) {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "" => return Some(Frame::Comment(value.to_owned())),
            "event" => event = Some(value.to_owned()),
            "id" => id = Some(value.to_owned()),
            "data" => data.push(value.to_owned()),
            other => panic!("an unknown field {other:?} in {text:?}"),
        }
    }
    let data = data.join("\n");
    let data = serde_json::from_str(&data).unwrap_or_else(|e| panic!("not JSON ({e}): {data}"));
    Some(Frame::Event(SseEvent {
        event: event.unwrap_or_else(|| "message".into()),
        id,
        data,
    }))
}
