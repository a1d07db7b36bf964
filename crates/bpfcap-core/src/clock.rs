//! Kernel timestamps (CLOCK_MONOTONIC) to wall-clock time.

/// Nanoseconds since the Unix epoch minus monotonic nanoseconds, sampled once.
pub fn wall_offset_ns() -> i64 {
    let now = |clock| {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        unsafe { libc::clock_gettime(clock, &mut ts) };
        #[allow(clippy::unnecessary_cast)] // time_t and c_long are 32-bit on some targets
        let ns = ts.tv_sec as i64 * 1_000_000_000 + ts.tv_nsec as i64;
        ns
    };
    let mono = now(libc::CLOCK_MONOTONIC);
    now(libc::CLOCK_REALTIME) - mono
}

pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// RFC 3339 in UTC with nanoseconds: `2026-11-25T21:35:09.123456789Z`.
pub fn rfc3339(unix_ns: i64) -> String {
    let mut out = Vec::with_capacity(30);
    write_rfc3339(unix_ns, &mut out);
    String::from_utf8(out).expect("ASCII")
}

/// Appends `rfc3339(unix_ns)` to `out`, without `core::fmt` (once per event).
pub fn write_rfc3339(unix_ns: i64, out: &mut Vec<u8>) {
    let secs = unix_ns.div_euclid(1_000_000_000);
    let nanos = unix_ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut digits = |n: i64, width: usize, sep: u8| {
        let mut n = n.unsigned_abs();
        let mut buf = [b'0'; 9];
        for d in buf[..width].iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
        out.extend_from_slice(&buf[..width]);
        out.push(sep);
    };
    digits(year, 4, b'-');
    digits(month, 2, b'-');
    digits(day, 2, b'T');
    digits(sod / 3600, 2, b':');
    digits(sod / 60 % 60, 2, b':');
    digits(sod % 60, 2, b'.');
    digits(nanos, 9, b'Z');
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(951_782_400_000_000_001), "2000-02-29T00:00:00.000000001Z");
        assert_eq!(rfc3339(1_795_642_509_123_456_789), "2026-11-25T21:35:09.123456789Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999999999Z");
    }
}
