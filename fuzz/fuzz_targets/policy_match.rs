//! Room rules: allow/deny templates (`*` wildcards, `{claim}` placeholders, `{{` / `}}` literal
//! braces) matched against room names, with claims from arbitrary JSON.
//!
//! Checked against a second, naive implementation written here (a template parser and a
//! quadratic glob matcher over characters):
//! - `Template::parse` / `parse_exact` accept exactly the templates the reference accepts;
//! - `matches` agrees with the reference glob over the template with its claims filled in as
//!   literal text (a claim holding `*` or braces never widens a pattern; a missing, empty or
//!   non-scalar claim matches nothing);
//! - `render` gives the reference's text (never empty); without wildcards, `matches(room)` holds
//!   exactly when `render() == Some(room)`;
//! - a template written from a literal name (braces doubled) matches exactly that name, and so
//!   does `{c}` with the name as claim `c`, whatever characters it holds;
//! - `check_room` is "some allow matches (or none given) and no deny matches";
//! - `auto_join_rooms` gives the distinct well-formed renderings, in order;
//! - `*x` repeated thousands of times against a long room name answers at once (run with
//!   `-timeout`: a backtracking matcher would hang here).
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Number, Value};
use switchboard_gateway::auth::Claims;
use switchboard_gateway::policy;
use switchboard_gateway::rule::{ArgPath, RoomRule, Template};

/// Pieces templates are made of, so that placeholders name claims that exist.
const TEMPLATE_PIECES: &[&str] = &[
    "{sub}", "{org.id}", "{org}", "{n}", "{a b}", "{}", "{*}", "{{sub}}", "*", "**", "{{", "}}",
    "{", "}", "a", "b", "ab", ".", ":", "é",
];
/// Pieces room names and claim values are made of.
const TEXT_PIECES: &[&str] = &[
    "a", "b", "ab", "*", "{", "}", "{{", ":", ".", "1", "true", "é", "",
];
const CLAIM_NAMES: &[&str] = &["sub", "org", "org.id", "n", "*", "id"];
/// Above this many steps the quadratic reference is skipped.
const MAX_REFERENCE_STEPS: usize = 200_000;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let _ = run(&mut u);
});

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    match u.int_in_range(0..=9u8)? {
        0 => literal_names(u),
        1 => many_wildcards(u),
        2 => auto_join(u),
        _ => patterns(u),
    }
}

/// One template, one set of claims, several rooms.
fn patterns(u: &mut Unstructured<'_>) -> Result<()> {
    let source = template_source(u)?;
    let claims = claims(u)?;
    let reference = ref_parse(&source, true);
    let template = Template::parse(&source);
    assert_eq!(template.is_ok(), reference.is_some(), "parse of {source:?}");
    let exact_ref = ref_parse(&source, false);
    assert_eq!(Template::parse_exact(&source).is_ok(), exact_ref.is_some());
    let (Ok(template), Some(tokens)) = (template, reference) else {
        return Ok(());
    };
    assert_eq!(template.source(), source);
    let wanted: Vec<&str> = tokens
        .iter()
        .filter_map(|t| match t {
            Tok::Claim(c) => Some(c.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(template.claims().collect::<Vec<_>>(), wanted);
    let cl = claims.as_ref();
    let filled = ref_fill(&tokens, cl);
    let rendered = template.render(cl);
    let want_render = filled
        .as_ref()
        .map(|p| p.iter().map(|c| c.unwrap_or('*')).collect::<String>());
    assert_eq!(rendered, want_render, "render of {source:?}");
    if let Some(r) = &rendered {
        assert!(!r.is_empty(), "an empty rendering of {source:?}");
    }
    let has_star = tokens.iter().any(|t| matches!(t, Tok::Star));
    let mut rooms = vec![room(u)?, room(u)?];
    if let Some(r) = &rendered {
        rooms.push(r.clone());
    }
    for room in &rooms {
        let got = template.matches(room, cl);
        if let Some(pattern) = &filled {
            let text: Vec<char> = room.chars().collect();
            if pattern.len().saturating_mul(text.len() + 1) <= MAX_REFERENCE_STEPS {
                assert_eq!(got, ref_glob(pattern, &text), "{source:?} against {room:?}");
            }
        } else {
            assert!(!got, "{source:?} with a missing claim matched {room:?}");
        }
        if !has_star {
            assert_eq!(got, rendered.as_deref() == Some(room.as_str()));
        }
    }
    // The same template as a rule's allow or deny list.
    let room = &rooms[0];
    let hit = template.matches(room, cl);
    let allow = RoomRule {
        room_arg: ArgPath::index(0),
        allow: vec![template.clone()],
        deny: Vec::new(),
    };
    assert_eq!(policy::check_room(room, &allow, cl).is_ok(), hit);
    let deny = RoomRule {
        room_arg: ArgPath::index(0),
        allow: Vec::new(),
        deny: vec![template],
    };
    assert_eq!(policy::check_room(room, &deny, cl).is_ok(), !hit);
    Ok(())
}

/// A literal name, written as a template or given as a claim, matches itself and nothing else.
fn literal_names(u: &mut Unstructured<'_>) -> Result<()> {
    let name = room(u)?;
    let other = room(u)?;
    if name.is_empty() {
        return Ok(());
    }
    if !name.contains('*') {
        // `*` has no escape: a name holding one can only be matched exactly through a claim.
        let source = name.replace('{', "{{").replace('}', "}}");
        let t = Template::parse_exact(&source).expect("an escaped literal parses");
        assert_eq!(t.render(None).as_deref(), Some(name.as_str()));
        assert!(t.matches(&name, None));
        assert_eq!(t.matches(&other, None), other == name);
        let p = Template::parse(&source).expect("an escaped literal parses as a pattern");
        assert_eq!(p, Template::parse(&source).expect("deterministic"));
        assert_eq!(p.matches(&other, None), other == name);
    }
    let claims = Claims::new(Map::from_iter([(
        "c".to_owned(),
        Value::String(name.clone()),
    )]));
    let exact = Template::parse("{c}").expect("a placeholder");
    assert_eq!(exact.render(Some(&claims)).as_deref(), Some(name.as_str()));
    assert!(exact.matches(&name, Some(&claims)));
    assert_eq!(exact.matches(&other, Some(&claims)), other == name);
    assert!(!exact.matches(&name, None), "no claims, no match");
    let prefixed = Template::parse("u:{c}:*").expect("a pattern");
    let want = other
        .strip_prefix("u:")
        .and_then(|rest| rest.strip_prefix(name.as_str()))
        .is_some_and(|rest| rest.starts_with(':'));
    assert_eq!(
        prefixed.matches(&other, Some(&claims)),
        want,
        "{name:?} in {other:?}"
    );
    Ok(())
}

/// `*x*x…*x*y` (k wildcards) against `x` repeated n times, with or without a final `y`.
fn many_wildcards(u: &mut Unstructured<'_>) -> Result<()> {
    let k = u.int_in_range(1..=4_000usize)?;
    let n = u.int_in_range(0..=200_000usize)?;
    let tail = u.arbitrary::<bool>()?;
    let source = format!("{}*y", "*x".repeat(k));
    let template = Template::parse(&source).expect("stars and letters parse");
    let mut room = "x".repeat(n);
    if tail {
        room.push('y');
    }
    assert_eq!(template.matches(&room, None), tail && n >= k);
    Ok(())
}

/// Rooms joined on connect: each template's rendering, if well-formed, once, in order.
fn auto_join(u: &mut Unstructured<'_>) -> Result<()> {
    let claims = claims(u)?;
    let mut templates = Vec::new();
    for _ in 0..u.int_in_range(0..=6u8)? {
        if let Ok(t) = Template::parse_exact(&template_source(u)?) {
            templates.push(t);
        }
    }
    let got = policy::auto_join_rooms(&templates, claims.as_ref());
    let mut want: Vec<String> = Vec::new();
    for t in &templates {
        if let Some(r) = t.render(claims.as_ref())
            && policy::check_room_name(&r).is_ok()
            && !want.contains(&r)
        {
            want.push(r);
        }
    }
    assert_eq!(got, want);
    Ok(())
}

fn template_source(u: &mut Unstructured<'_>) -> Result<String> {
    let mut s = String::new();
    for _ in 0..u.int_in_range(0..=8u8)? {
        if u.ratio(1, 6)? {
            s.push(u.arbitrary::<char>()?);
        } else {
            s.push_str(u.choose(TEMPLATE_PIECES)?);
        }
    }
    Ok(s)
}

fn room(u: &mut Unstructured<'_>) -> Result<String> {
    if u.ratio(1, 8)? {
        return u.arbitrary();
    }
    let mut s = String::new();
    for _ in 0..u.int_in_range(0..=8u8)? {
        s.push_str(u.choose(TEXT_PIECES)?);
    }
    Ok(s)
}

fn claims(u: &mut Unstructured<'_>) -> Result<Option<Claims>> {
    if u.ratio(1, 8)? {
        return Ok(None);
    }
    let mut map = Map::new();
    for _ in 0..u.int_in_range(0..=4u8)? {
        map.insert((*u.choose(CLAIM_NAMES)?).to_owned(), value(u, 2)?);
    }
    Ok(Some(Claims::new(map)))
}

fn value(u: &mut Unstructured<'_>, depth: u8) -> Result<Value> {
    let kinds = if depth == 0 { 5 } else { 7 };
    Ok(match u.int_in_range(0..=kinds)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::Number(Number::from(u.arbitrary::<i64>()?)),
        3 => Number::from_f64(u.arbitrary()?).map_or(Value::Null, Value::Number),
        4 | 5 => Value::String(room(u)?),
        6 => Value::Array(vec![value(u, depth - 1)?]),
        _ => {
            let mut map = Map::new();
            for _ in 0..u.int_in_range(0..=2u8)? {
                map.insert((*u.choose(CLAIM_NAMES)?).to_owned(), value(u, depth - 1)?);
            }
            Value::Object(map)
        }
    })
}

/// A reference token: `Claim` names a claim, `Star` is a wildcard.
enum Tok {
    Lit(char),
    Star,
    Claim(String),
}

/// The template syntax as documented, written independently of `policy.rs`.
fn ref_parse(source: &str, allow_star: bool) -> Option<Vec<Tok>> {
    if source.is_empty() {
        return None;
    }
    let chars: Vec<char> = source.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let next = chars.get(i + 1).copied();
        match chars[i] {
            '{' if next == Some('{') => {
                out.push(Tok::Lit('{'));
                i += 2;
            }
            '{' => {
                let len = chars[i + 1..].iter().position(|&c| c == '}' || c == '{')?;
                if chars[i + 1 + len] == '{' {
                    return None;
                }
                let name: String = chars[i + 1..i + 1 + len].iter().collect();
                if name.is_empty() || name.chars().any(char::is_whitespace) {
                    return None;
                }
                out.push(Tok::Claim(name));
                i += len + 2;
            }
            '}' if next == Some('}') => {
                out.push(Tok::Lit('}'));
                i += 2;
            }
            '}' => return None,
            '*' if !allow_star => return None,
            '*' => {
                if !matches!(out.last(), Some(Tok::Star)) {
                    out.push(Tok::Star);
                }
                i += 1;
            }
            c => {
                out.push(Tok::Lit(c));
                i += 1;
            }
        }
    }
    Some(out)
}

/// The pattern with claims filled in (`None` = wildcard); `None` if a claim is unusable.
fn ref_fill(tokens: &[Tok], claims: Option<&Claims>) -> Option<Vec<Option<char>>> {
    let mut out = Vec::new();
    for t in tokens {
        match t {
            Tok::Lit(c) => out.push(Some(*c)),
            Tok::Star => out.push(None),
            Tok::Claim(name) => {
                let text = match claims?.lookup(name)? {
                    Value::String(s) if !s.is_empty() => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => return None,
                };
                out.extend(text.chars().map(Some));
            }
        }
    }
    Some(out)
}

/// Whether `pattern` (`None` = any run of characters) matches all of `text`.
fn ref_glob(pattern: &[Option<char>], text: &[char]) -> bool {
    // reach[j]: the pattern so far matches text[..j].
    let mut reach = vec![false; text.len() + 1];
    reach[0] = true;
    for p in pattern {
        match p {
            None => {
                for j in 1..=text.len() {
                    reach[j] |= reach[j - 1];
                }
            }
            Some(c) => {
                for j in (1..=text.len()).rev() {
                    reach[j] = reach[j - 1] && text[j - 1] == *c;
                }
                reach[0] = false;
            }
        }
    }
    reach[text.len()]
}
