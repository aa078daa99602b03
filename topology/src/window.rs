//! Time windows, windowed keys and their byte encoding.
//!
//! A [`TimeWindows`] definition maps a record's event time to the windows
//! it belongs to: one for tumbling windows, `size / advance` for hopping
//! ones. Every window has an explicit grace period: a window accepts records
//! until stream time passes `end + grace`; later records are dropped (and
//! counted, and can be routed to a late-record topic). Windows are
//! half-open: `[start, end)`.
//!
//! [`WindowedSerde`] is the one place windowed keys become bytes:
//! `u32 key length | key | start | end`, with the timestamps big-endian and
//! their sign bit flipped, so byte order equals (key, start, end) order and a
//! range scan over one key's windows walks them by start time.

use std::time::Duration;

use crate::record::Timestamp;
use crate::serdes::{Serde, SerdeError};

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A half-open time interval `[start, end)`, ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Window {
    /// First instant in the window.
    pub start: Timestamp,
    /// First instant after the window.
    pub end: Timestamp,
}

/// A key and the window it was aggregated in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Windowed<K> {
    /// The record key.
    pub key: K,
    /// The window.
    pub window: Window,
}

/// Fixed-size windows: tumbling (advance = size) or hopping (advance < size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindows {
    size: i64,
    advance: i64,
    grace: i64,
}

/// Why a window definition is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid windows: {0}")]
pub struct WindowError(String);

impl TimeWindows {
    /// Tumbling windows of `size`, accepting records up to `grace` after
    /// they end.
    pub fn tumbling(size: Duration, grace: Duration) -> Result<Self, WindowError> {
        TimeWindows::hopping(size, size, grace)
    }

    /// Windows of `size` starting every `advance` (each record falls into
    /// `size / advance` windows).
    pub fn hopping(
        size: Duration,
        advance: Duration,
        grace: Duration,
    ) -> Result<Self, WindowError> {
        let (size, advance, grace) = (millis(size), millis(advance), millis(grace));
        if size <= 0 {
            return Err(WindowError(format!(
                "size must be at least 1 ms, got {size} ms"
            )));
        }
        if advance <= 0 || advance > size {
            return Err(WindowError(format!(
                "advance must be between 1 ms and the size ({size} ms), got {advance} ms"
            )));
        }
        Ok(TimeWindows {
            size,
            advance,
            grace,
        })
    }

    /// Window size, ms.
    pub fn size(&self) -> i64 {
        self.size
    }

    /// Grace period, ms.
    pub fn grace(&self) -> i64 {
        self.grace
    }

    /// The windows containing `timestamp`, earliest first.
    pub fn windows_for(&self, timestamp: Timestamp) -> Vec<Window> {
        // The last window starting at or before `timestamp`, then back by
        // `advance` while the window still contains it.
        let last_start = timestamp - timestamp.rem_euclid(self.advance);
        let mut windows = Vec::new();
        let mut start = last_start;
        while start > timestamp - self.size {
            if start >= 0 {
                windows.push(Window {
                    start,
                    end: start.saturating_add(self.size),
                });
            }
            start -= self.advance;
        }
        windows.reverse();
        windows
    }
}

fn flip(ts: i64) -> [u8; 8] {
    ((ts as u64) ^ (1 << 63)).to_be_bytes()
}

fn unflip(bytes: [u8; 8]) -> i64 {
    (u64::from_be_bytes(bytes) ^ (1 << 63)) as i64
}

/// Serde for [`Windowed<K>`] keys (see the module docs for the layout).
pub struct WindowedSerde<K>(pub std::sync::Arc<dyn Serde<K>>);

impl<K: 'static> Serde<Windowed<K>> for WindowedSerde<K> {
    fn serialize(&self, value: &Windowed<K>) -> Result<Option<Vec<u8>>, SerdeError> {
        let key = self.0.serialize(&value.key)?.unwrap_or_default();
        let len = u32::try_from(key.len()).map_err(|_| SerdeError::Encode {
            format: "windowed key",
            type_name: std::any::type_name::<K>(),
            reason: format!("key of {} bytes is too long", key.len()),
        })?;
        let mut out = Vec::with_capacity(4 + key.len() + 16);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&key);
        out.extend_from_slice(&flip(value.window.start));
        out.extend_from_slice(&flip(value.window.end));
        Ok(Some(out))
    }

    fn deserialize(&self, bytes: Option<&[u8]>) -> Result<Windowed<K>, SerdeError> {
        let invalid = |reason: String| SerdeError::Invalid {
            format: "windowed key",
            type_name: std::any::type_name::<K>(),
            reason,
        };
        let bytes = bytes.ok_or(SerdeError::UnexpectedNull {
            type_name: "Windowed",
        })?;
        let len_bytes: [u8; 4] = bytes
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| invalid(format!("{} bytes is too short", bytes.len())))?;
        let len = u32::from_be_bytes(len_bytes) as usize;
        if bytes.len() != 4 + len + 16 {
            return Err(invalid(format!(
                "length {} does not match key length {len}",
                bytes.len()
            )));
        }
        let key = self.0.deserialize(Some(&bytes[4..4 + len]))?;
        let ts = |at: usize| -> i64 {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            unflip(b)
        };
        Ok(Windowed {
            key,
            window: Window {
                start: ts(4 + len),
                end: ts(4 + len + 8),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serdes::Utf8;
    use std::sync::Arc;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn tumbling_windows_are_half_open() {
        let w = TimeWindows::tumbling(ms(60_000), ms(0)).unwrap();
        assert_eq!(
            w.windows_for(0),
            vec![Window {
                start: 0,
                end: 60_000
            }]
        );
        assert_eq!(
            w.windows_for(59_999),
            vec![Window {
                start: 0,
                end: 60_000
            }]
        );
        assert_eq!(
            w.windows_for(60_000),
            vec![Window {
                start: 60_000,
                end: 120_000
            }]
        );
    }

    #[test]
    fn hopping_windows_cover_each_instant_size_over_advance_times() {
        let w = TimeWindows::hopping(ms(10), ms(5), ms(0)).unwrap();
        assert_eq!(
            w.windows_for(12),
            vec![Window { start: 5, end: 15 }, Window { start: 10, end: 20 }]
        );
        // No negative window starts near the epoch.
        assert_eq!(w.windows_for(3), vec![Window { start: 0, end: 10 }]);
        assert!(TimeWindows::hopping(ms(10), ms(11), ms(0)).is_err());
        assert!(TimeWindows::tumbling(ms(0), ms(0)).is_err());
    }

    #[test]
    fn windowed_keys_round_trip_and_sort_by_key_then_start() {
        let serde = WindowedSerde(Arc::new(Utf8) as Arc<dyn Serde<String>>);
        let key = |k: &str, start: i64| {
            serde
                .serialize(&Windowed {
                    key: k.to_string(),
                    window: Window {
                        start,
                        end: start + 10,
                    },
                })
                .unwrap()
                .unwrap()
        };
        let back = serde.deserialize(Some(&key("user", -5))).unwrap();
        assert_eq!(back.key, "user");
        assert_eq!(back.window, Window { start: -5, end: 5 });
        assert!(key("a", -5) < key("a", 0) && key("a", 0) < key("a", 100));
        assert!(key("a", 100) < key("b", 0));
        assert!(serde.deserialize(Some(&[0, 0, 0, 9, 1])).is_err());
    }
}
