//! Seeded samples for the judge's tests, made with arithmetic alone so that
//! `hack/oracle/mwu.py` makes the very same values: splitmix64, a sum of twelve uniforms for
//! a bell shape, rare outliers, rounding for ties, and a scale.

/// splitmix64, as the oracle script has it.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform on [0, 1).
    pub(crate) fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// How one side's values are drawn.
#[derive(Clone, Copy, Debug, serde::Deserialize)]
pub(crate) struct Shape {
    pub center: f64,
    pub spread: f64,
    /// The chance of a value far out to the right.
    pub outliers: f64,
    /// Values are rounded down to multiples of 1/round_to when it is above 0 (ties).
    pub round_to: f64,
    pub scale: f64,
}

impl Shape {
    pub(crate) fn normal(center: f64, spread: f64) -> Self {
        Shape {
            center,
            spread,
            outliers: 0.0,
            round_to: 0.0,
            scale: 1.0,
        }
    }

    pub(crate) fn draw(&self, rng: &mut Rng, n: usize) -> Vec<f64> {
        (0..n).map(|_| self.value(rng)).collect()
    }

    fn value(&self, rng: &mut Rng) -> f64 {
        let mut sum = 0.0;
        for _ in 0..12 {
            sum += rng.uniform();
        }
        let mut v = self.center + self.spread * (sum - 6.0);
        if self.outliers > 0.0 && rng.uniform() < self.outliers {
            v = self.center + self.spread * 20.0 * rng.uniform();
        }
        if self.round_to > 0.0 {
            v = (v * self.round_to).floor() / self.round_to;
        }
        v * self.scale
    }
}
