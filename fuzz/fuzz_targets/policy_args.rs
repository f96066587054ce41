//! Argument paths (`room_arg = "0.room"`) applied to arbitrary JSON event arguments.
//!
//! - `ArgPath::parse` accepts exactly `N` or `N.field…` (digits first, no empty field), and its
//!   `Display` parses back to the same path;
//! - `get` agrees with a reference walk: objects by key, arrays by the field read as an index,
//!   anything else ends the walk;
//! - `room_from_args` follows `get`: absent or null is `MissingRoom`, a non-string
//!   `RoomNotString`, an empty string `InvalidRoom`, one over `MAX_ROOM_NAME_BYTES`
//!   `RoomTooLong`, else that very string.
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Number, Value};
use switchboard_gateway::policy::{self, MAX_ROOM_NAME_BYTES, Rejection};
use switchboard_gateway::rule::ArgPath;

const PATH_PIECES: &[&str] = &[
    "0",
    "1",
    "2",
    "00",
    "01",
    "+1",
    "-1",
    "18446744073709551616",
    ".",
    "room",
    "target",
    "a",
    "",
];
const KEYS: &[&str] = &["room", "target", "a", "0", "1", "01", ""];

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let _ = run(&mut u);
});

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let source = path_source(u)?;
    let args = match u.int_in_range(0..=3u8)? {
        0 => match serde_json::from_slice::<Value>(u.bytes(u.len())?) {
            Ok(Value::Array(items)) => items,
            Ok(other) => vec![other],
            Err(_) => return Ok(()),
        },
        _ => (0..u.int_in_range(0..=3u8)?)
            .map(|_| value(u, 3))
            .collect::<Result<_>>()?,
    };
    let parsed = ArgPath::parse(&source);
    let reference = ref_parse(&source);
    assert_eq!(parsed.is_ok(), reference.is_some(), "parse of {source:?}");
    let (Ok(path), Some((index, fields))) = (parsed, reference) else {
        return Ok(());
    };
    let shown = path.to_string();
    assert_eq!(
        ArgPath::parse(&shown).as_ref(),
        Ok(&path),
        "{source:?} shown as {shown:?}"
    );
    let got = path.get(&args);
    let want = ref_get(&args, index, &fields);
    assert_eq!(got.map(std::ptr::from_ref), want.map(std::ptr::from_ref));
    let room = policy::room_from_args(&args, &path);
    match want {
        None | Some(Value::Null) => assert_eq!(room, Err(Rejection::MissingRoom)),
        Some(Value::String(s)) if s.is_empty() => assert_eq!(room, Err(Rejection::InvalidRoom)),
        Some(Value::String(s)) if s.len() > MAX_ROOM_NAME_BYTES => {
            assert_eq!(room, Err(Rejection::RoomTooLong));
        }
        Some(Value::String(s)) => assert!(room.is_ok_and(|r| std::ptr::eq(r, s.as_str()))),
        Some(_) => assert_eq!(room, Err(Rejection::RoomNotString)),
    }
    Ok(())
}

/// `N` or `N.field…` as documented: an index of ASCII digits that fits `usize`, then non-empty
/// fields.
fn ref_parse(source: &str) -> Option<(usize, Vec<&str>)> {
    let mut parts = source.split('.');
    let first = parts.next()?;
    if first.is_empty() || !first.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let index = first.parse().ok()?;
    let fields: Vec<&str> = parts.collect();
    if fields.iter().any(|f| f.is_empty()) {
        return None;
    }
    Some((index, fields))
}

fn ref_get<'a>(args: &'a [Value], index: usize, fields: &[&str]) -> Option<&'a Value> {
    let mut cur = args.get(index)?;
    for field in fields {
        cur = match cur {
            Value::Object(map) => map.get(*field)?,
            // As `usize::from_str` reads it: `+1` and `01` are index 1 too.
            Value::Array(items) => items.get(field.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn path_source(u: &mut Unstructured<'_>) -> Result<String> {
    if u.ratio(1, 8)? {
        return u.arbitrary();
    }
    let mut s = String::new();
    for _ in 0..u.int_in_range(0..=7u8)? {
        s.push_str(u.choose(PATH_PIECES)?);
    }
    Ok(s)
}

fn value(u: &mut Unstructured<'_>, depth: u8) -> Result<Value> {
    let kinds = if depth == 0 { 4 } else { 6 };
    Ok(match u.int_in_range(0..=kinds)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::Number(Number::from(u.arbitrary::<i64>()?)),
        3 => Value::String(match u.int_in_range(0..=3u8)? {
            0 => String::new(),
            1 => "r".repeat(MAX_ROOM_NAME_BYTES),
            2 => "r".repeat(MAX_ROOM_NAME_BYTES + 1),
            _ => u.arbitrary()?,
        }),
        4 => Value::String((*u.choose(KEYS)?).to_owned()),
        5 => Value::Array(
            (0..u.int_in_range(0..=3u8)?)
                .map(|_| value(u, depth - 1))
                .collect::<Result<_>>()?,
        ),
        _ => {
            let mut map = Map::new();
            for _ in 0..u.int_in_range(0..=3u8)? {
                map.insert((*u.choose(KEYS)?).to_owned(), value(u, depth - 1)?);
            }
            Value::Object(map)
        }
    })
}
