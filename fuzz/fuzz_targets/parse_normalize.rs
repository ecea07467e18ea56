//! Any bytes, either dialect, any status: the wire parser and the normalizer must never panic,
//! and every payload they accept must yield rows that satisfy the validation rules.
#![no_main]

use libfuzzer_sys::fuzz_target;
use soundtrend::domain::{ClipId, Period, Region};
use soundtrend::normalize::{normalize, rules, Observation};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    // The selector picks the status and the requested window; the rest is the body.
    let status = if selector & 0x80 == 0 {
        200
    } else {
        429 + u16::from(selector & 0x7f)
    };
    let period = [Period::Days7, Period::Days30, Period::Days120][usize::from(selector % 3)];
    let obs = Observation {
        clip_id: ClipId::parse("6703723351497508865").expect("valid"),
        region: Region::parse("US").expect("valid"),
        period,
        observed_at: chrono::DateTime::from_timestamp(1_770_000_000, 0).expect("valid"),
    };
    if let Ok(detail) = soundtrend::provider::parse_response(status, body) {
        if let Ok(rows) = normalize(&detail, &obs) {
            if let Err(broken) = rules::check(&rows, &obs) {
                panic!("accepted rows break a rule: {broken}");
            }
        }
    }
});
