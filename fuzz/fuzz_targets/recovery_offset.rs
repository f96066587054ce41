//! Recovery offsets (`proto/src/offset.rs`), which a client sends back in its CONNECT payload:
//!
//! - `parse` never panics, whatever the bytes;
//! - whatever it accepts, `format` writes back byte for byte (one text per offset), so an offset
//!   from a client maps to exactly one position of exactly one incarnation of the log;
//! - every `(tag, seq)` formats to text `parse` reads back as the same pair.
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use switchboard_proto::offset;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let _ = run(&mut u);
});

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let text: &str = u.arbitrary()?;
    if let Some((tag, seq)) = offset::parse(text) {
        assert_eq!(
            offset::format(tag, seq),
            text,
            "{text:?} is not in the one form"
        );
    }
    let (tag, seq): (u64, u64) = u.arbitrary()?;
    assert_eq!(offset::parse(&offset::format(tag, seq)), Some((tag, seq)));
    Ok(())
}
