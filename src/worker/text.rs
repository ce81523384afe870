//! The built-in worker's "model": text, embedding vectors and transcripts drawn from the weights'
//! bytes by a seeded generator, so the same request always gets the same answer and tests can
//! check it. Pure functions: no IO, no clock.

/// How many dimensions an embedding has unless the request asks for another number.
pub const EMBEDDING_DIMENSIONS: usize = 16;

/// The most dimensions a request may ask for: a bound on the answer's size.
pub const MAX_EMBEDDING_DIMENSIONS: usize = 4096;

/// Deterministic words from the weights: the same prompt and file always give the same text.
/// Each word is found around a pseudo-random offset, so generation costs the same for a 1 KB
/// or a 1 GB file.
pub fn generate(weights: &[u8], prompt: &str, max_tokens: usize) -> Vec<String> {
    words(weights, fnv1a(prompt.as_bytes()), max_tokens.clamp(1, 1024))
}

/// The transcript of an audio file: a few words from the weights, seeded by the file's bytes,
/// so the same upload always gives the same text.
pub fn transcript(weights: &[u8], audio: &[u8]) -> String {
    let seed = fnv1a(audio);
    words(weights, seed, 4 + (seed % 12) as usize).join(" ")
}

/// A unit vector of `dimensions` floats for `text`, from the weights: the same text and file
/// always give the same vector, another text (almost surely) another one.
pub fn embedding(weights: &[u8], text: &str, dimensions: usize) -> Vec<f32> {
    let mut random = Xorshift::new(fnv1a(text.as_bytes()) ^ weights_seed(weights));
    let mut vector: Vec<f32> = (0..dimensions)
        .map(|_| {
            let r = random.next();
            let byte = weights
                .get((r % weights.len().max(1) as u64) as usize)
                .copied()
                .unwrap_or(0);
            let bits = ((r >> 32) as u32) ^ (u32::from(byte) << 8);
            (f64::from(bits) / f64::from(u32::MAX) * 2.0 - 1.0) as f32
        })
        .collect();
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|x| *x /= norm);
    }
    vector
}

/// A vector as OpenAI's `encoding_format: "base64"` sends it: its little-endian f32 bytes in
/// standard base64 (with padding).
pub fn base64_f32(vector: &[f32]) -> String {
    let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64(&bytes)
}

/// How many tokens a text counts as in `usage`: its whitespace-separated words.
pub fn token_count(text: &str) -> usize {
    text.split_whitespace().count()
}

pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// `count` words found around pseudo-random offsets of the weights, seeded by `seed`.
fn words(weights: &[u8], seed: u64, count: usize) -> Vec<String> {
    let mut random = Xorshift::new(seed);
    (0..count)
        .map(|_| {
            word_at(
                weights,
                (random.next() % weights.len().max(1) as u64) as usize,
            )
        })
        .collect()
}

/// xorshift64*: cheap, seedable, and good enough to pick words.
struct Xorshift(u64);

impl Xorshift {
    fn new(seed: u64) -> Self {
        // Zero is xorshift's one fixed point.
        Xorshift(seed | 1)
    }

    fn next(&mut self) -> u64 {
        let state = &mut self.0;
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// A hash of the weights that costs the same for any size: their length and both ends.
fn weights_seed(weights: &[u8]) -> u64 {
    let head = &weights[..weights.len().min(4096)];
    let tail = &weights[weights.len().saturating_sub(4096)..];
    fnv1a(head) ^ fnv1a(tail).rotate_left(17) ^ (weights.len() as u64).rotate_left(41)
}

fn word_at(bytes: &[u8], offset: usize) -> String {
    let is_word = |b: &u8| b.is_ascii_alphanumeric() || *b == b'\'' || *b == b'-';
    if bytes.is_empty() {
        return "…".to_string();
    }
    // Move to the start of the next word (wrapping), then take it.
    let start = (0..bytes.len().min(4096))
        .map(|i| (offset + i) % bytes.len())
        .find(|&i| is_word(&bytes[i]) && (i == 0 || !is_word(&bytes[i - 1])));
    let Some(start) = start else {
        return "…".to_string();
    };
    let end = bytes[start..]
        .iter()
        .take(48)
        .position(|b| !is_word(b))
        .map_or(bytes.len().min(start + 48), |n| start + n);
    String::from_utf8_lossy(&bytes[start..end]).to_lowercase()
}

/// Standard base64 with padding (RFC 4648 section 4): small enough to write here rather than
/// take a crate for one encoder.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let group = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        for i in 0..4 {
            // A chunk of n bytes fills n + 1 characters; '=' pads the rest.
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(group >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEIGHTS: &[u8] = b"the quick brown fox jumps over the lazy dog";

    #[test]
    fn generation_is_deterministic_and_uses_the_files_words() {
        let a = generate(WEIGHTS, "hello", 8);
        let b = generate(WEIGHTS, "hello", 8);
        assert_eq!(a, b);
        assert_eq!(a.len(), 8);
        let vocabulary: Vec<&str> = std::str::from_utf8(WEIGHTS).unwrap().split(' ').collect();
        assert!(a.iter().all(|w| vocabulary.contains(&w.as_str())), "{a:?}");
        assert_ne!(generate(WEIGHTS, "other prompt", 8), a);
    }

    #[test]
    fn empty_or_wordless_weights_do_not_panic() {
        assert_eq!(generate(b"", "x", 2), vec!["…", "…"]);
        assert_eq!(generate(b"   ...   ", "x", 1), vec!["…"]);
        assert_eq!(embedding(b"", "x", 4).len(), 4);
        assert!(!transcript(b"", b"audio").is_empty());
    }

    #[test]
    fn an_embedding_is_a_deterministic_unit_vector_of_the_text_and_the_weights() {
        let a = embedding(WEIGHTS, "hello", EMBEDDING_DIMENSIONS);
        assert_eq!(a.len(), EMBEDDING_DIMENSIONS);
        assert_eq!(a, embedding(WEIGHTS, "hello", EMBEDDING_DIMENSIONS));
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
        assert!(a.iter().all(|x| (-1.0..=1.0).contains(x)), "{a:?}");
        assert_ne!(embedding(WEIGHTS, "other", EMBEDDING_DIMENSIONS), a);
        assert_ne!(
            embedding(b"other weights", "hello", EMBEDDING_DIMENSIONS),
            a
        );
        assert_eq!(embedding(WEIGHTS, "hello", 0), Vec::<f32>::new());
    }

    #[test]
    fn a_transcript_depends_only_on_the_audio_and_the_weights() {
        let text = transcript(WEIGHTS, b"RIFF....WAVEfmt ");
        assert_eq!(text, transcript(WEIGHTS, b"RIFF....WAVEfmt "));
        let count = text.split(' ').count();
        assert!((4..16).contains(&count), "{text:?}");
        let vocabulary: Vec<&str> = std::str::from_utf8(WEIGHTS).unwrap().split(' ').collect();
        assert!(text.split(' ').all(|w| vocabulary.contains(&w)), "{text:?}");
        assert_ne!(transcript(WEIGHTS, b"another recording"), text);
    }

    #[test]
    fn base64_matches_rfc_4648() {
        // RFC 4648 section 10's test vectors.
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
        assert_eq!(base64(&[0xff, 0xfe, 0xfd]), "//79");
        // 1.0f32 is 00 00 80 3f in little-endian order.
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
    }
}
