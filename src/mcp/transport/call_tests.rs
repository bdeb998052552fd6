//! The fast `tools/call` parse held to rmcp's own parse of the same lines, and the -32602
//! answers it gives a call whose params are wrong.

use super::call::Fast;
use super::*;

/// The tools whose arguments travel as text in these tests (the server's list).
const RAW: &[&str] = &["upsert"];

/// What becomes of `line` on a connection that keeps [`RAW`]'s arguments as text.
fn classify(line: &[u8]) -> Result<Option<RxJsonRpcMessage<RoleServer>>, Rejection> {
    super::classify::classify(line, RAW)
}

/// The fast parse of `line`, keeping [`RAW`]'s arguments as text.
fn tool_call(line: &[u8]) -> Fast {
    super::call::tool_call(line, RAW)
}

/// rmcp takes a `tools/call` with wrong params for an unknown method (-32601); the
/// caller gets -32602 and the field at fault instead.
#[test]
fn a_tool_call_with_wrong_params_is_told_which() {
    let refused = |line: &str| classify(line.as_bytes()).unwrap_err();
    let r = refused(
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"upsert","arguments":[1]}}"#,
    );
    assert_eq!((r.id, r.code), (Some(3.into()), -32602));
    assert_eq!(
        r.message,
        "Invalid params: params.arguments: must be a JSON object, got an array"
    );
    let r = refused(r#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":5}}"#);
    assert_eq!((r.id, r.code), (Some("a".into()), -32602));
    assert!(
        r.message
            .starts_with("Invalid params: params.name: invalid type: integer `5`"),
        "{}",
        r.message
    );
    let r = refused(r#"{"jsonrpc":"2.0","id":4,"method":"tools/call"}"#);
    assert_eq!(r.message, "Invalid params: missing field `params`");
    // Not a call: rmcp decides, as before.
    assert!(classify(br#"{"jsonrpc":"2.0","id":5,"method":"tools/list"}"#).is_ok());
}

/// Generated `tools/call`-like lines (fields present, null, missing or of the wrong kind,
/// in any order, with stray fields): whenever the fast parse answers, rmcp's own parse
/// gives the same message, and for every call rmcp accepts, the fast parse answers.
/// Seeded; `CALL_SEED=n` replays a run.
#[test]
fn the_fast_tool_call_parse_is_rmcps_parse() {
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};
    let seed = std::env::var("CALL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    fn pick(rng: &mut rand::rngs::StdRng, options: &[&str]) -> Option<String> {
        let i = rng.random_range(0..=options.len());
        options.get(i).map(|s| s.to_string())
    }
    fn object(rng: &mut rand::rngs::StdRng, fields: Vec<(&str, Option<String>)>) -> String {
        let mut parts: Vec<String> = fields
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| format!("{k:?}:{v}")))
            .collect();
        parts.shuffle(rng);
        format!("{{{}}}", parts.join(","))
    }
    let (mut fast_answered, mut calls_accepted, mut refused) = (0, 0, 0);
    for round in 0..20_000 {
        let meta = pick(
            &mut rng,
            &[
                r#"{"progressToken":7}"#,
                r#"{"a":{"b":[1,2.5]}}"#,
                "null",
                "{}",
                "3",
            ],
        );
        let arguments = pick(
            &mut rng,
            &[
                r#"{"index":"x","vectors":[{"id":"a","vector":[0.1,-2e-3,1e300,3],"metadata":{"k":null}}]}"#,
                r#"{"filter":{"$and":[{"a":{"$gt":1}}]},"top_k":18446744073709551615}"#,
                "{}",
                "null",
                "[1]",
                r#""text""#,
            ],
        );
        let fields = vec![
            (
                "name",
                pick(&mut rng, &[r#""upsert""#, r#""search""#, "5", r#""""#]),
            ),
            ("arguments", arguments),
            ("_meta", meta),
            ("requestState", pick(&mut rng, &[r#""s1""#, "null", "1"])),
            ("inputResponses", pick(&mut rng, &[r#"{"r":{"x":1}}"#, "null"])),
            ("extra", pick(&mut rng, &["1", r#"{"y":[]}"#])),
        ];
        let params = object(&mut rng, fields);
        let fields = vec![
            (
                "jsonrpc",
                pick(&mut rng, &[r#""2.0""#, r#""2.0""#, r#""2.0""#, r#""1.0""#]),
            ),
            ("id", pick(&mut rng, &["1", r#""abc""#, "-4", "null", "1.5"])),
            (
                "method",
                pick(
                    &mut rng,
                    &[
                        r#""tools/call""#,
                        r#""tools/call""#,
                        r#""tools/list""#,
                        r#""ping""#,
                    ],
                ),
            ),
            ("params", (rng.random_range(0..8) > 0).then_some(params)),
            (
                "result",
                (rng.random_range(0..12) == 0).then(|| "null".to_string()),
            ),
            ("error", (rng.random_range(0..12) == 0).then(|| "{}".to_string())),
            ("other", (rng.random_range(0..4) == 0).then(|| "true".to_string())),
        ];
        let line = object(&mut rng, fields);
        let fast = match tool_call(line.as_bytes()) {
            Fast::Message(mut message) => {
                // Arguments kept as text are the arguments: put them back to compare.
                if let rmcp::model::JsonRpcMessage::Request(r) = &mut message {
                    if let rmcp::model::ClientRequest::CallToolRequest(call) = &mut r.request {
                        if let Some(raw) = call.extensions.get::<RawArguments>() {
                            assert!(call.params.arguments.is_none());
                            call.params.arguments = Some(serde_json::from_str(&raw.0).unwrap());
                        }
                    }
                }
                Fast::Message(message)
            }
            other => other,
        };
        let reference = serde_json::from_slice::<RxJsonRpcMessage<RoleServer>>(line.as_bytes());
        let is_call = matches!(
            &reference,
            Ok(rmcp::model::JsonRpcMessage::Request(r))
                if matches!(r.request, rmcp::model::ClientRequest::CallToolRequest(_))
        );
        calls_accepted += usize::from(is_call);
        match (&fast, &reference) {
            (Fast::Message(fast), Ok(reference)) => {
                fast_answered += 1;
                assert_eq!(
                    serde_json::to_value(fast).unwrap(),
                    serde_json::to_value(reference).unwrap(),
                    "seed {seed}, round {round}: {line}"
                );
            }
            (Fast::Message(_), Err(e)) => {
                panic!("seed {seed}, round {round}: rmcp refuses ({e}) what the fast parse took: {line}")
            }
            (Fast::Refused(rejection), _) => {
                refused += 1;
                assert!(
                    !is_call,
                    "seed {seed}, round {round}: refused a call rmcp takes: {line}"
                );
                assert_eq!(rejection.code, -32602, "{line}");
                assert!(rejection.id.is_some(), "{line}");
                assert!(
                    rejection.message.starts_with("Invalid params: "),
                    "{}",
                    rejection.message
                );
            }
            (Fast::NotMine, _) => assert!(
                !is_call,
                "seed {seed}, round {round}: a call only rmcp took: {line}"
            ),
        }
    }
    assert!(refused > 100, "seed {seed}: only {refused} refused");
    assert!(
        fast_answered > 200,
        "seed {seed}: only {fast_answered} calls generated"
    );
    assert_eq!(fast_answered, calls_accepted);
}
