//! One record of a conversations file, as a [`Conversation`]: the OpenAI chat shape
//! (`{"messages": [...]}`) and the LLaVA / ShareGPT4V shape (`{"id", "image",
//! "conversations": [{"from", "value"}]}`). Records are read as `serde_json::Value` and
//! interpreted here by hand, so that every refusal names the message and the part.

use serde_json::Value;

use super::{Conversation, ImageRef, Part, Turn};
use crate::untrusted::quoted;

/// Images per conversation; a record past it is refused (LLaVA's records hold one,
/// multi-image datasets a few dozen).
pub const MAX_IMAGES: usize = 10_000;
/// Turns per conversation (the experiment's `turns` limit).
pub const MAX_TURNS: usize = 10_000;

/// An OpenAI chat record: `{"id"?, "messages": [{"role", "content"}]}`; other keys
/// (datasets carry their own) are ignored.
pub fn openai(record: &Value) -> Result<Conversation, String> {
    let object = record.as_object().ok_or("is not a JSON object with `messages`")?;
    let messages = object.get("messages").ok_or("has no `messages`")?.as_array().ok_or("`messages` is not a list")?;
    let mut b = Builder::new(id(object.get("id")));
    for (i, m) in messages.iter().enumerate() {
        let at = |what: &str| format!("message {}: {what}", i + 1);
        let role = m.get("role").and_then(Value::as_str).ok_or_else(|| at("has no `role`"))?;
        let content = m.get("content").ok_or_else(|| at("has no `content`"))?;
        let parts = openai_content(content).map_err(|e| at(&e))?;
        match role {
            "system" | "developer" => b.system(text_only(parts).map_err(|e| at(&e))?).map_err(|e| at(&e))?,
            "user" => b.user(parts, false).map_err(|e| at(&e))?,
            "assistant" => b.assistant(text_only(parts).map_err(|e| at(&e))?).map_err(|e| at(&e))?,
            other => return Err(at(&format!("role {} is not `system`, `user` or `assistant`", quoted(other)))),
        }
    }
    b.finish()
}

/// A message's content: a string, or a list of `text` and `image_url` parts.
fn openai_content(content: &Value) -> Result<Vec<Part>, String> {
    let list = match content {
        Value::String(s) => return Ok(vec![Part::Text(s.clone())]),
        Value::Null => return Ok(Vec::new()),
        Value::Array(list) => list,
        _ => return Err("`content` is neither a string nor a list of parts".into()),
    };
    let mut parts = Vec::with_capacity(list.len());
    for (i, p) in list.iter().enumerate() {
        let at = |what: &str| format!("content part {}: {what}", i + 1);
        match p.get("type").and_then(Value::as_str) {
            Some("text") => parts.push(Part::Text(p.get("text").and_then(Value::as_str).ok_or_else(|| at("has no `text`"))?.to_string())),
            Some("image_url") => {
                // `{"image_url": {"url": …}}`, or the bare string some writers use.
                let url = match p.get("image_url") {
                    Some(Value::String(s)) => s.as_str(),
                    Some(v) => v.get("url").and_then(Value::as_str).ok_or_else(|| at("`image_url` has no `url`"))?,
                    None => return Err(at("has no `image_url`")),
                };
                parts.push(Part::Image(image_ref(url).map_err(|e| at(&e))?));
            }
            Some(other) => return Err(at(&format!("type {} is not read (only `text` and `image_url`)", quoted(other)))),
            None => return Err(at("has no `type`")),
        }
    }
    Ok(parts)
}

/// A LLaVA / ShareGPT4V record: `{"id", "image": "a.jpg" | ["a.jpg", …], "conversations":
/// [{"from": "human" | "gpt", "value": "<image>\n…"}]}`. Each `<image>` placeholder
/// takes the next image; a record with images and no placeholder puts them before the
/// first question (what LLaVA's own loader does).
pub fn llava(record: &Value) -> Result<Conversation, String> {
    let object = record.as_object().ok_or("is not a JSON object with `conversations`")?;
    let images: Vec<&str> = match object.get("image") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(list)) => {
            list.iter().map(|v| v.as_str().ok_or("`image` holds something that is not a path")).collect::<Result<_, _>>()?
        }
        Some(_) => return Err("`image` is neither a path nor a list of paths".into()),
    };
    let turns = object.get("conversations").ok_or("has no `conversations`")?.as_array().ok_or("`conversations` is not a list")?;
    // Only a question takes an image: `<image>` in an answer is the answer's text.
    let asks = |t: &&Value| matches!(t.get("from").and_then(Value::as_str), Some("human" | "user"));
    let placeholders: usize =
        turns.iter().filter(asks).filter_map(|t| t.get("value").and_then(Value::as_str)).map(|v| v.matches(PLACEHOLDER).count()).sum();
    if placeholders != 0 && placeholders != images.len() {
        return Err(format!("holds {placeholders} `<image>` placeholders for {} images", images.len()));
    }
    let mut queue = images.into_iter();
    let mut b = Builder::new(id(object.get("id")));
    for (i, t) in turns.iter().enumerate() {
        let at = |what: &str| format!("turn {}: {what}", i + 1);
        let from = t.get("from").and_then(Value::as_str).ok_or_else(|| at("has no `from`"))?;
        let value = t.get("value").and_then(Value::as_str).ok_or_else(|| at("has no `value`"))?;
        match from {
            "human" | "user" => {
                let mut parts = Vec::new();
                if placeholders == 0 && b.turns.is_empty() {
                    for path in queue.by_ref() {
                        parts.push(Part::Image(image_ref(path).map_err(|e| at(&e))?));
                    }
                }
                for (k, text) in value.split(PLACEHOLDER).enumerate() {
                    if k > 0 {
                        let path = queue.next().ok_or_else(|| at("has more `<image>` placeholders than images"))?;
                        parts.push(Part::Image(image_ref(path).map_err(|e| at(&e))?));
                    }
                    parts.push(Part::Text(text.to_string()));
                }
                b.user(parts, true).map_err(|e| at(&e))?
            }
            "gpt" | "assistant" => b.assistant(value.to_string()).map_err(|e| at(&e))?,
            "system" => b.system(value.to_string()).map_err(|e| at(&e))?,
            other => return Err(at(&format!("`from` is {}, not `human` or `gpt`", quoted(other)))),
        }
    }
    b.finish()
}

const PLACEHOLDER: &str = "<image>";

/// A record's `id`, a string or a number.
fn id(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A path (relative to the conversations file) or a base64 `data:` URI; nothing is
/// downloaded.
fn image_ref(text: &str) -> Result<ImageRef, String> {
    if let Some(rest) = text.strip_prefix("data:") {
        let (head, _) = rest.split_once(',').ok_or("a `data:` URI without a comma")?;
        if !head.ends_with(";base64") {
            return Err("a `data:` URI that is not base64 (`data:image/jpeg;base64,…`)".into());
        }
        return Ok(ImageRef::Data(text.to_string()));
    }
    if text.starts_with("http://") || text.starts_with("https://") {
        return Err(format!("image {} is a web address; pipeline reads images from files or `data:` URIs", quoted(text)));
    }
    if text.trim().is_empty() {
        return Err("an image with an empty path".into());
    }
    Ok(ImageRef::File(text.to_string()))
}

/// A system or assistant message: its text parts joined; an image there is refused.
fn text_only(parts: Vec<Part>) -> Result<String, String> {
    let mut text = String::new();
    for p in parts {
        match p {
            Part::Text(t) => text.push_str(&t),
            Part::Image(_) => return Err("an image outside a user message".into()),
        }
    }
    Ok(text)
}

/// Messages in order into turns: a user message opens a turn, the assistant message
/// after it is that turn's recorded answer.
struct Builder {
    id: Option<String>,
    system: Option<String>,
    turns: Vec<Turn>,
    images: usize,
}

impl Builder {
    fn new(id: Option<String>) -> Builder {
        Builder { id, system: None, turns: Vec::new(), images: 0 }
    }

    fn system(&mut self, text: String) -> Result<(), String> {
        if !self.turns.is_empty() {
            return Err("a system message after the first user message".into());
        }
        match &mut self.system {
            Some(s) => {
                s.push('\n');
                s.push_str(&text);
            }
            None => self.system = Some(text),
        }
        Ok(())
    }

    /// A user message; `trim`: whitespace around its text is layout (around LLaVA's
    /// placeholders), not content. OpenAI parts are sent as written.
    fn user(&mut self, parts: Vec<Part>, trim: bool) -> Result<(), String> {
        let parts: Vec<Part> = parts
            .into_iter()
            .filter_map(|p| match p {
                Part::Text(t) if t.trim().is_empty() => None,
                Part::Text(t) if trim => Some(Part::Text(t.trim().to_string())),
                other => Some(other),
            })
            .collect();
        if parts.is_empty() {
            return Err("a user message with neither text nor images".into());
        }
        self.images += parts.iter().filter(|p| matches!(p, Part::Image(_))).count();
        if self.images > MAX_IMAGES {
            return Err(format!("more than {MAX_IMAGES} images in one conversation"));
        }
        if self.turns.len() == MAX_TURNS {
            return Err(format!("more than {MAX_TURNS} user turns in one conversation"));
        }
        self.turns.push(Turn { parts, answer: None });
        Ok(())
    }

    /// The answer to the last turn; an empty one is no answer (it cannot be resent).
    fn assistant(&mut self, text: String) -> Result<(), String> {
        let last = self.turns.last_mut().ok_or("an assistant message before any user message")?;
        if last.answer.is_some() {
            return Err("two assistant messages after one user message".into());
        }
        last.answer = Some(text).filter(|t| !t.trim().is_empty());
        Ok(())
    }

    fn finish(self) -> Result<Conversation, String> {
        if self.turns.is_empty() {
            return Err("has no user message".into());
        }
        Ok(Conversation { id: self.id, system: self.system, turns: self.turns })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn openai_messages_become_turns_with_their_answers() {
        let c = openai(&json!({"id": 7, "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": "a.jpg"}}]},
            {"role": "assistant", "content": "a cat"},
            {"role": "user", "content": "and now?"}
        ]}))
        .unwrap();
        assert_eq!(c.id.as_deref(), Some("7"));
        assert_eq!(c.system.as_deref(), Some("be brief"));
        assert_eq!(c.turns.len(), 2);
        assert_eq!(c.turns[0].parts, vec![Part::Text("what is this?".into()), Part::Image(ImageRef::File("a.jpg".into()))]);
        assert_eq!(c.turns[0].answer.as_deref(), Some("a cat"));
        assert_eq!(c.turns[1].answer, None);
    }

    #[test]
    fn llava_placeholders_place_the_images() {
        let c = llava(&json!({"id": "x", "image": ["a.jpg", "b.jpg"], "conversations": [
            {"from": "human", "value": "<image>\nfirst?"},
            {"from": "gpt", "value": "one"},
            {"from": "human", "value": "compare with <image> please"},
            {"from": "gpt", "value": "two"}
        ]}))
        .unwrap();
        assert_eq!(c.turns[0].parts, vec![Part::Image(ImageRef::File("a.jpg".into())), Part::Text("first?".into())]);
        assert_eq!(
            c.turns[1].parts,
            vec![Part::Text("compare with".into()), Part::Image(ImageRef::File("b.jpg".into())), Part::Text("please".into())]
        );
        // A placeholder in an answer is text; the image then goes before the question.
        let c = llava(&json!({"image": "a.jpg", "conversations": [
            {"from": "human", "value": "what?"}, {"from": "gpt", "value": "an <image> token"}
        ]}))
        .unwrap();
        assert_eq!(c.turns[0].parts[0], Part::Image(ImageRef::File("a.jpg".into())));
        assert_eq!(c.turns[0].answer.as_deref(), Some("an <image> token"));
        // No placeholder: the image goes before the first question.
        let c = llava(&json!({"image": "a.jpg", "conversations": [{"from": "human", "value": "what?"}]})).unwrap();
        assert_eq!(c.turns[0].parts, vec![Part::Image(ImageRef::File("a.jpg".into())), Part::Text("what?".into())]);
    }

    #[test]
    fn what_is_refused_says_where() {
        let no_user = openai(&json!({"messages": [{"role": "system", "content": "x"}]})).unwrap_err();
        assert_eq!(no_user, "has no user message");
        let tool = openai(&json!({"messages": [{"role": "tool", "content": "x"}]})).unwrap_err();
        assert_eq!(tool, "message 1: role `tool` is not `system`, `user` or `assistant`");
        let web = openai(&json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "https://x/a.jpg"}]}]}))
            .unwrap_err();
        assert!(web.starts_with("message 1: content part 1: image `https://x/a.jpg` is a web address"), "{web}");
        let counts = llava(&json!({"image": ["a.jpg"], "conversations": [{"from": "human", "value": "<image><image>"}]})).unwrap_err();
        assert_eq!(counts, "holds 2 `<image>` placeholders for 1 images");
        let early = llava(&json!({"conversations": [{"from": "gpt", "value": "hi"}]})).unwrap_err();
        assert_eq!(early, "turn 1: an assistant message before any user message");
    }
}
