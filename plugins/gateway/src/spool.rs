//! A byte buffer that stays in memory up to a threshold and moves to an
//! anonymous temporary file past it: a chunked request body (so that
//! CONTENT_LENGTH can be set) and script output that arrives while the
//! request body is still being fed to the script.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};

/// Collects bytes.
pub struct Spool {
    mem: Vec<u8>,
    file: Option<File>,
    len: u64,
    threshold: usize,
}

impl Spool {
    pub fn new(threshold: usize) -> Spool {
        Spool {
            mem: Vec::new(),
            file: None,
            len: 0,
            threshold,
        }
    }

    /// Appends `data`, moving everything to a temporary file when the
    /// memory part would pass the threshold.
    pub fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        if self.file.is_none() && self.mem.len() + data.len() > self.threshold {
            // Unlinked at creation: nothing is left behind, whatever happens.
            let mut f = tempfile::tempfile()?;
            f.write_all(&self.mem)?;
            self.mem = Vec::new();
            self.file = Some(f);
        }
        match &mut self.file {
            Some(f) => f.write_all(data)?,
            None => self.mem.extend_from_slice(data),
        }
        self.len += data.len() as u64;
        Ok(())
    }

    /// Bytes collected.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was collected.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies a whole reader in.
    pub fn fill_from(&mut self, r: &mut dyn Read) -> io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.write_all(&buf[..n])?;
        }
    }

    /// Reads the collected bytes back from the start.
    pub fn into_reader(self) -> io::Result<SpoolReader> {
        Ok(match self.file {
            Some(mut f) => {
                f.seek(SeekFrom::Start(0))?;
                SpoolReader::File(f)
            }
            None => SpoolReader::Mem(io::Cursor::new(self.mem)),
        })
    }
}

/// Reads a [`Spool`] back.
pub enum SpoolReader {
    Mem(io::Cursor<Vec<u8>>),
    File(File),
}

impl Read for SpoolReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            SpoolReader::Mem(c) => c.read(buf),
            SpoolReader::File(f) => f.read(buf),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_stays_in_memory_large_goes_to_a_file() {
        let mut s = Spool::new(10);
        s.write_all(b"hello").unwrap();
        assert!(s.file.is_none());
        s.write_all(b" world!").unwrap();
        assert!(s.file.is_some() && s.mem.is_empty());
        assert_eq!(s.len(), 12);
        let mut out = String::new();
        s.into_reader().unwrap().read_to_string(&mut out).unwrap();
        assert_eq!(out, "hello world!");
    }
}
