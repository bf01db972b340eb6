//! A look at the frame headers of what the client sends, before `h2` sees
//! them, for the connection errors RFC 9113 names more precisely than
//! `h2` reports them: a SETTINGS, PING, RST_STREAM, PRIORITY or
//! WINDOW_UPDATE frame of the wrong length is a `FRAME_SIZE_ERROR`
//! (sections 6.3 to 6.9), an initial window size over 2^31-1 a
//! `FLOW_CONTROL_ERROR` (section 6.5.2); `h2` answers all of them with
//! `PROTOCOL_ERROR`. Everything else is left to `h2`.

/// `FLOW_CONTROL_ERROR`.
pub const FLOW_CONTROL_ERROR: u32 = 0x3;
/// `FRAME_SIZE_ERROR`.
pub const FRAME_SIZE_ERROR: u32 = 0x6;

const SETTINGS: u8 = 0x4;
/// The most of a SETTINGS payload looked at (the default frame size limit;
/// a larger frame is `h2`'s to refuse).
const SETTINGS_MAX: usize = 16_384;

/// Where the scan is in the client's bytes.
pub struct Meter {
    /// Bytes of the connection preface still to pass.
    preface: usize,
    head: [u8; 9],
    head_len: usize,
    /// Payload bytes of the current frame still to pass.
    skip: usize,
    /// The SETTINGS payload being gathered (its values are checked).
    settings: Option<Vec<u8>>,
}

impl Default for Meter {
    fn default() -> Self {
        Meter {
            preface: crate::http::H2_PREFACE.len(),
            head: [0; 9],
            head_len: 0,
            skip: 0,
            settings: None,
        }
    }
}

impl Meter {
    /// Scans more of the client's bytes: `Err((code, n))` at the first
    /// frame that is a connection error of that code, whose header starts
    /// `n` bytes into `data` (0 when it began in an earlier call).
    pub fn scan(&mut self, data: &[u8]) -> Result<(), (u32, usize)> {
        let whole = data.len();
        let mut data = data;
        // Where the frame header being read began in `data`.
        let mut head_at = 0;
        while !data.is_empty() {
            if self.preface > 0 {
                let n = self.preface.min(data.len());
                self.preface -= n;
                data = &data[n..];
                continue;
            }
            if self.skip > 0 {
                let n = self.skip.min(data.len());
                if let Some(s) = &mut self.settings {
                    s.extend_from_slice(&data[..n]);
                }
                self.skip -= n;
                data = &data[n..];
                if self.skip == 0
                    && let Some(s) = self.settings.take()
                {
                    // The frame's header was `len` + 9 bytes back.
                    let at = (whole - data.len()).saturating_sub(s.len() + 9);
                    check_settings(&s).map_err(|c| (c, at))?;
                }
                continue;
            }
            if self.head_len == 0 {
                head_at = whole - data.len();
            }
            let n = (9 - self.head_len).min(data.len());
            self.head[self.head_len..self.head_len + n].copy_from_slice(&data[..n]);
            self.head_len += n;
            data = &data[n..];
            if self.head_len < 9 {
                break;
            }
            self.head_len = 0;
            let h = self.head;
            let len = (h[0] as usize) << 16 | (h[1] as usize) << 8 | h[2] as usize;
            let (ty, flags) = (h[3], h[4]);
            let wrong = match ty {
                SETTINGS => (flags & 1 != 0 && len != 0) || !len.is_multiple_of(6),
                0x6 => len != 8,       // PING
                0x8 | 0x3 => len != 4, // WINDOW_UPDATE, RST_STREAM
                0x2 => len != 5,       // PRIORITY
                _ => false,
            };
            if wrong {
                return Err((FRAME_SIZE_ERROR, head_at));
            }
            self.skip = len;
            if ty == SETTINGS && len > 0 && len <= SETTINGS_MAX {
                self.settings = Some(Vec::with_capacity(len));
            }
        }
        Ok(())
    }
}

fn check_settings(p: &[u8]) -> Result<(), u32> {
    for e in p.chunks_exact(6) {
        let id = u16::from_be_bytes([e[0], e[1]]);
        let value = u32::from_be_bytes([e[2], e[3], e[4], e[5]]);
        // SETTINGS_INITIAL_WINDOW_SIZE over the largest window.
        if id == 0x4 && value > 0x7fff_ffff {
            return Err(FLOW_CONTROL_ERROR);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(ty: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let n = payload.len();
        let mut f = vec![
            (n >> 16) as u8,
            (n >> 8) as u8,
            n as u8,
            ty,
            flags,
            0,
            0,
            0,
            1,
        ];
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn frame_lengths_are_checked_across_any_split() {
        let mut good = crate::http::H2_PREFACE.to_vec();
        good.extend(frame(SETTINGS, 0, &[0, 4, 0, 1, 0, 0]));
        good.extend(frame(0x6, 0, &[0; 8]));
        good.extend(frame(0x1, 0x5, b"abc"));
        good.extend(frame(0x8, 0, &[0, 0, 0, 1]));
        for cut in 0..good.len() {
            let mut m = Meter::default();
            assert_eq!(m.scan(&good[..cut]), Ok(()));
            assert_eq!(m.scan(&good[cut..]), Ok(()), "split at {cut}");
        }
        let bad: [(Vec<u8>, u32); 5] = [
            (frame(0x6, 0, &[0; 7]), FRAME_SIZE_ERROR),
            (frame(SETTINGS, 1, &[0; 6]), FRAME_SIZE_ERROR),
            (frame(SETTINGS, 0, &[0; 5]), FRAME_SIZE_ERROR),
            (frame(0x3, 0, &[0; 3]), FRAME_SIZE_ERROR),
            (
                frame(SETTINGS, 0, &[0, 4, 0x80, 0, 0, 0]),
                FLOW_CONTROL_ERROR,
            ),
        ];
        for (f, code) in bad {
            let mut all = crate::http::H2_PREFACE.to_vec();
            all.extend(frame(0x6, 0, &[0; 8]));
            let at = all.len();
            // Where the error shows: after the header, or (a settings
            // value) after the payload.
            let seen = at
                + if code == FLOW_CONTROL_ERROR {
                    f.len()
                } else {
                    9
                };
            all.extend(f);
            for cut in 0..all.len() {
                let mut m = Meter::default();
                let first = m.scan(&all[..cut]);
                if cut >= seen {
                    // Seen in the first call, `at` bytes into it.
                    assert_eq!(first, Err((code, at)), "split at {cut}");
                    continue;
                }
                assert_eq!(first, Ok(()), "split at {cut}");
                // Seen in the second: the bytes of it before the frame.
                let before = at.saturating_sub(cut);
                assert_eq!(m.scan(&all[cut..]), Err((code, before)), "split at {cut}");
            }
        }
    }
}
