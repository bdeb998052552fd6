//! Reading a JSON array of numbers into `f32`s fast, with exactly the values serde_json's
//! typed parse gives (`serde_json::from_str::<Vec<f32>>`, with `float_roundtrip`).
//!
//! serde_json reads each number of a vector through its general number parser and a
//! correctly rounded but slow decimal algorithm; for an upsert of 500 x 384 numbers that was
//! the largest entry of the request path's profile (BENCHMARKS.md). Here a strict scanner
//! checks each token against JSON's number grammar and the standard library's float parser
//! (correctly rounded straight to `f32` too, and much faster) reads it. Anything this reader is not sure of
//! (another kind of value, an integer too long to be exact in an `f64`, a number that is not
//! finite as an `f32`) is `None`: the caller then takes serde_json's path, which also writes
//! the error message. A randomized test holds the two equal, bit for bit.
//!
//! This module owns number reading only; it knows nothing of tools or the store.

/// The numbers of `text`, a JSON array of numbers, or `None` when serde_json's own parse must
/// decide (see the module's documentation).
pub fn floats(text: &str) -> Option<Vec<f32>> {
    let b = text.as_bytes();
    let mut i = skip_space(b, 0);
    if b.get(i) != Some(&b'[') {
        return None;
    }
    i = skip_space(b, i + 1);
    // About 10 bytes per number as clients print them; too small only costs a regrowth.
    let mut out = Vec::with_capacity(b.len() / 10 + 1);
    if b.get(i) == Some(&b']') {
        return (skip_space(b, i + 1) == b.len()).then_some(out);
    }
    loop {
        let (value, end) = number(text, i)?;
        out.push(value);
        i = skip_space(b, end);
        match b.get(i)? {
            b',' => i = skip_space(b, i + 1),
            b']' => return (skip_space(b, i + 1) == b.len()).then_some(out),
            _ => return None,
        }
    }
}

fn skip_space(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

fn digits(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    i
}

/// The number token at `start` (JSON's grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]?
/// [0-9]+)?`) as serde_json would make it an `f32`, and where the token ends.
fn number(text: &str, start: usize) -> Option<(f32, usize)> {
    let b = text.as_bytes();
    let mut i = start;
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    let int_start = i;
    match b.get(i)? {
        b'0' => i += 1,
        b'1'..=b'9' => i = digits(b, i + 1),
        _ => return None,
    }
    let int_digits = i - int_start;
    let mut integer = true;
    if b.get(i) == Some(&b'.') {
        let frac_start = i + 1;
        i = digits(b, frac_start);
        if i == frac_start {
            return None;
        }
        integer = false;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let exp_start = i;
        i = digits(b, exp_start);
        if i == exp_start {
            return None;
        }
        integer = false;
    }
    // serde_json (with `float_roundtrip`) rounds a decimal straight to the nearest f32, as the
    // standard library does; an integer it reads as a u64 or i64 first, then rounds that to
    // an f32, which is the same value while the integer fits (15 digits always do).
    if integer && int_digits > 15 {
        return None;
    }
    // The token is ASCII: both ends are character boundaries.
    let value: f32 = text.get(start..i)?.parse().ok()?;
    value.is_finite().then_some((value, i))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// What serde_json makes of `text`, when it reads it as finite f32s.
    fn serde(text: &str) -> Option<Vec<u32>> {
        let v: Vec<f32> = serde_json::from_str(text).ok()?;
        v.iter()
            .all(|x| x.is_finite())
            .then(|| v.iter().map(|x| x.to_bits()).collect())
    }

    fn ours(text: &str) -> Option<Vec<u32>> {
        floats(text).map(|v| v.iter().map(|x| x.to_bits()).collect())
    }

    fn random_number(rng: &mut impl Rng) -> String {
        match rng.random_range(0..9) {
            // As JavaScript prints a Float32Array's values: the shortest f64 text of an f32.
            0 => format!("{}", rng.random_range(-1.0f32..1.0) as f64),
            // Rounded to a few decimals.
            1 => format!("{:.*}", rng.random_range(0..9), rng.random_range(-2.0f64..2.0)),
            // Integers, short and long (past what an f64 holds exactly).
            2 => format!("{}", rng.random_range(-100_000i64..100_000)),
            3 => {
                let len = rng.random_range(14..22);
                let mut s: String = (0..len)
                    .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
                    .collect();
                s.replace_range(0..1, &rng.random_range(1..10u8).to_string());
                if rng.random_bool(0.5) {
                    s.insert(0, '-');
                }
                s
            }
            // Exponents, near f32's limits and past them.
            4 => format!(
                "{}e{}",
                rng.random_range(-9.99f64..9.99),
                rng.random_range(-50..50)
            ),
            5 => format!("{}E+{}", rng.random_range(1..10), rng.random_range(30..40)),
            // Long mantissas, halfway cases between two f32s.
            6 => {
                let x = rng.random_range(-1.0f32..1.0);
                let next = f32::from_bits(x.to_bits() + 1);
                format!("{:.25}", (x as f64 + next as f64) / 2.0)
            }
            7 => [
                "0",
                "-0",
                "0.0",
                "-0.0",
                "1e-46",
                "-1e-46",
                "1.4e-45",
                "3.4028235e38",
                "3.4028236e38",
                "0e0",
            ][rng.random_range(0..10)]
            .to_string(),
            // Subnormal f32s.
            _ => format!("{:e}", f32::from_bits(rng.random_range(1..0x0080_0000)) as f64),
        }
    }

    /// Texts serde_json refuses or reads differently: never taken for numbers here.
    fn random_oddity(rng: &mut impl Rng) -> &'static str {
        [
            "null", "\"1\"", "true", "[1]", "{}", "01", "1.", ".5", "+1", "1e", "1e+", "-", "--1", "1.e3",
            "NaN", "Infinity", "0x10", "1_0", "1e400", "-1e40", "1 2",
        ][rng.random_range(0..21)]
    }

    #[test]
    fn reads_every_number_as_serde_json_does() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        for case in 0..20_000 {
            let len = rng.random_range(0..6);
            let odd = rng.random_bool(0.2);
            let mut items: Vec<String> = (0..len).map(|_| random_number(&mut rng)).collect();
            if odd {
                let at = rng.random_range(0..=items.len());
                items.insert(at, random_oddity(&mut rng).to_string());
            }
            let space = [" ", "", "\n", "\t", "  \r\n"][rng.random_range(0..5)];
            let text = format!(
                "{space}[{space}{}{space}]{space}",
                items.join(&format!("{space},{space}"))
            );
            // Integers past 15 digits are left to serde_json on purpose.
            let long_integer = items.iter().any(|s| {
                s.trim_start_matches('-').len() > 15
                    && s.trim_start_matches('-').bytes().all(|c| c.is_ascii_digit())
            });
            let (theirs, mine) = (serde(&text), ours(&text));
            match mine {
                // What we read is what serde_json reads, bit for bit.
                Some(_) => assert_eq!(mine, theirs, "case {case}: {text:?}"),
                // What we leave is something odd, or an integer we are not sure of.
                None => assert!(
                    theirs.is_none() || odd || long_integer,
                    "case {case}: {text} left to serde_json for no reason"
                ),
            }
        }
    }

    #[test]
    fn common_vectors_take_the_fast_path() {
        assert_eq!(floats("[]"), Some(vec![]));
        assert_eq!(floats(" [ 0.5 , -2 , 3e-3 ] "), Some(vec![0.5, -2.0, 0.003]));
        assert_eq!(floats("[-0]").map(|v| v[0].to_bits()), Some((-0.0f32).to_bits()));
        let printed: Vec<String> = (0..384)
            .map(|i| format!("{}", (i as f32 / 384.0 - 0.5) as f64))
            .collect();
        assert!(floats(&format!("[{}]", printed.join(","))).is_some());
        for refused in [
            "[1,]",
            "[,1]",
            "[1 2]",
            "[1]x",
            "[null]",
            "[1e40]",
            "[",
            "1",
            "[1234567890123456]",
        ] {
            assert_eq!(floats(refused), None, "{refused}");
        }
    }
}
