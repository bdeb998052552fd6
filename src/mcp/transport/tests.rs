//! The framing's unit tests: lines read whole and over-long ones cut to their top level,
//! ids recovered from broken lines, the depth scan, and the answer each bad line gets.

use super::classify::max_depth;
use super::*;

/// The tools whose arguments travel as text in these tests (the server's list).
const RAW: &[&str] = &["upsert"];

/// What becomes of `line` on a connection that keeps [`RAW`]'s arguments as text.
fn classify(line: &[u8]) -> Result<Option<RxJsonRpcMessage<RoleServer>>, Rejection> {
    super::classify::classify(line, RAW)
}

/// The plain byte-by-byte reading of [`max_depth`], to hold the fast one to.
fn max_depth_plain(text: &[u8]) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in text {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

#[test]
fn max_depth_reads_as_the_plain_scan_on_generated_text() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let alphabet = b"[]{}\"\\ab1,:";
    for case in 0..50_000 {
        let len = rng.random_range(0..40);
        let text: Vec<u8> = (0..len)
            .map(|_| alphabet[rng.random_range(0..alphabet.len())])
            .collect();
        assert_eq!(
            max_depth(&text),
            max_depth_plain(&text),
            "case {case}: {}",
            String::from_utf8_lossy(&text)
        );
    }
}

fn deep_and(levels: usize) -> String {
    let mut filter = r#"{"a":1}"#.to_string();
    for _ in 0..levels {
        filter = format!(r#"{{"$and":[{filter}]}}"#);
    }
    format!(
        r#"{{"jsonrpc":"2.0","id":41,"method":"tools/call","params":{{"name":"search","arguments":{{"index":"x","vector":[1],"filter":{filter}}}}}}}"#
    )
}

#[test]
fn ids_are_recovered_from_broken_and_partial_lines() {
    assert_eq!(
        recover_id(br#"{"jsonrpc":"2.0","id":7,"method":"tools/li"#),
        Some(7.into())
    );
    assert_eq!(
        recover_id(br#"{"params":{"id":3},"id":"a\"b"}"#),
        Some("a\"b".into())
    );
    assert_eq!(recover_id(br#"{"method":"x","params":{"id":3}"#), None);
    assert_eq!(recover_id(b"hello"), None);
    assert_eq!(recover_id(br#"{"id": -12 , "x": ["#), Some((-12).into()));
    assert_eq!(recover_id(br#"{"id":null}"#), None);
}

#[test]
fn every_bad_line_with_an_id_gets_an_answer_with_that_id() {
    let garbage = classify(b"hello").unwrap_err();
    assert_eq!((garbage.id, garbage.code), (None, -32700));
    let truncated = classify(br#"{"jsonrpc":"2.0","id":7,"method":"tools/li"#).unwrap_err();
    assert_eq!((truncated.id, truncated.code), (Some(7.into()), -32700));
    let deep = classify(deep_and(100).as_bytes()).unwrap_err();
    assert_eq!((deep.id, deep.code), (Some(41.into()), -32600));
    assert!(deep.message.contains("levels deep"), "{}", deep.message);
    let deep_array = format!(
        r#"{{"jsonrpc":"2.0","id":"d","method":"ping","params":{{"x":{}1{}}}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    assert_eq!(classify(deep_array.as_bytes()).unwrap_err().id, Some("d".into()));
    let not_jsonrpc = classify(br#"{"id":5,"hello":"world"}"#).unwrap_err();
    assert_eq!((not_jsonrpc.id, not_jsonrpc.code), (Some(5.into()), -32600));
    let line = String::from_utf8(not_jsonrpc_line()).unwrap();
    assert!(line.ends_with('\n') && line.contains(r#""id":5"#), "{line}");
}

fn not_jsonrpc_line() -> Vec<u8> {
    classify(br#"{"id":5,"hello":"world"}"#).unwrap_err().to_line()
}

#[test]
fn a_filter_the_tool_can_refuse_still_reaches_the_tool() {
    // 58 levels of $and are 116 levels of JSON with the envelope: under serde_json's
    // limit, so the search tool answers with its own "nested deeper than 32" error.
    assert!(matches!(classify(deep_and(58).as_bytes()), Ok(Some(_))));
    assert!(classify(br#"{"jsonrpc":"2.0","method":"notifications/whatever"}"#).is_ok());
}

#[tokio::test]
async fn lines_are_read_whole_and_over_long_ones_keep_their_top_level() {
    let (mut client, server) = tokio::io::duplex(1 << 20);
    let mut reader = Reader {
        input: BufReader::new(server),
        writer: Arc::new(Mutex::new(Box::new(tokio::io::sink()))),
        raw_argument_tools: RAW,
    };
    let big = format!(r#"{{"id":9,"x":"{}"}}"#, "y".repeat(MAX_LINE));
    // The TypeScript SDK's order: the id after 16 MiB of params, which hold decoy ids,
    // escaped quotes and brackets inside strings.
    let params = r#"{"id":1,"s":"a\"}{[\\","v":[0.5,{"id":2}]}"#.repeat(MAX_LINE / 40);
    let sdk =
        format!(r#"{{"method":"tools/call","params":{{"a":[{params}]}},"jsonrpc":"2.0","id":"last-\"q"}}"#);
    tokio::spawn(async move {
        client.write_all(b"\r\n  \n{\"a\":1}\r\n").await.unwrap();
        client.write_all(big.as_bytes()).await.unwrap();
        client.write_all(b"\n").await.unwrap();
        client.write_all(sdk.as_bytes()).await.unwrap();
        client.write_all(b"\nlast").await.unwrap();
    });
    assert!(matches!(reader.read_line().await.unwrap(), Some(Line::Whole(l)) if l == b"{\"a\":1}"));
    match reader.read_line().await.unwrap() {
        Some(Line::TooLong(top)) => {
            assert_eq!(
                top,
                br#"{"id":9,"x":""#.iter().chain(&[b'y'; 1024]).chain(br#""}"#).copied().collect::<Vec<u8>>()
            );
            assert_eq!(recover_id(&top), Some(9.into()));
        }
        _ => panic!("expected an over-long line"),
    }
    match reader.read_line().await.unwrap() {
        Some(Line::TooLong(top)) => {
            assert_eq!(
                top,
                br#"{"method":"tools/call","params":{},"jsonrpc":"2.0","id":"last-\"q"}"#
            );
            assert_eq!(recover_id(&top), Some("last-\"q".into()));
        }
        _ => panic!("expected an over-long line"),
    }
    assert!(matches!(reader.read_line().await.unwrap(), Some(Line::Whole(l)) if l == b"last"));
    assert!(reader.read_line().await.unwrap().is_none());
}
