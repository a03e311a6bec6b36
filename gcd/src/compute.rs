//! Greatest common divisor of two `u64`s.

/// Binary (Stein's) GCD: shifts and subtractions only, so its cost is
/// bounded by the bit width, not by the size of a quotient, and no input
/// can overflow or panic. `gcd(0, 0)` is 0 by convention.
pub fn gcd(mut a: u64, mut b: u64) -> u64 {
    if a == 0 {
        return b;
    }
    if b == 0 {
        return a;
    }
    let shift = (a | b).trailing_zeros();
    a >>= a.trailing_zeros();
    loop {
        b >>= b.trailing_zeros();
        if a > b {
            std::mem::swap(&mut a, &mut b);
        }
        b -= a;
        if b == 0 {
            return a << shift;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::gcd;
    use proptest::prelude::*;

    /// Euclid's algorithm: obviously correct, used as the reference.
    fn reference(a: u64, b: u64) -> u64 {
        if b == 0 { a } else { reference(b, a % b) }
    }

    #[test]
    fn edge_cases() {
        let max = u64::MAX;
        let cases = [
            (0, 0, 0),
            (0, 7, 7),
            (7, 0, 7),
            (1, max, 1),
            (max, max, max),
            (max, max - 1, 1),
            (12, 18, 6),
            (18, 12, 6),
            (1 << 63, 1 << 40, 1 << 40),
            (2_147_483_647, 2_147_483_647, 2_147_483_647),
            (2_147_483_647, 524_287, 1),        // two Mersenne primes
            (18_446_744_073_709_551_557, 3, 1), // the largest u64 prime
            (max, 3 * 5 * 17 * 257, 3 * 5 * 17 * 257),
        ];
        for (a, b, expected) in cases {
            assert_eq!(gcd(a, b), expected, "gcd({a}, {b})");
        }
    }

    proptest! {
        #[test]
        fn agrees_with_euclid(a: u64, b: u64) {
            prop_assert_eq!(gcd(a, b), reference(a, b));
        }

        #[test]
        fn agrees_with_euclid_on_shared_factors(x in 1u64..1 << 20, y in 1u64..1 << 20, k in 1u64..1 << 20) {
            prop_assert_eq!(gcd(x * k, y * k), reference(x * k, y * k));
        }

        #[test]
        fn equal_values_and_one(a: u64) {
            prop_assert_eq!(gcd(a, a), a);
            prop_assert_eq!(gcd(a, 1), u64::from(a != 0));
            prop_assert_eq!(gcd(a, 0), a);
        }
    }
}
