//! Size against time for each coding and level, on the files given:
//! `cargo run --release -p tamada-compress --example levels -- FILE...`
//! (how the default levels in docs/plugins/compress.md were chosen).

use std::io::Write;
use std::time::Instant;

fn main() {
    for path in std::env::args().skip(1) {
        let data = std::fs::read(&path).expect("read");
        println!("{path}: {} bytes", data.len());
        println!("coding level   bytes  ratio  us/op   MB/s");
        let runs = |f: &dyn Fn() -> usize| {
            let n = 30;
            let t = Instant::now();
            let mut size = 0;
            for _ in 0..n {
                size = f();
            }
            (size, t.elapsed().as_secs_f64() / n as f64)
        };
        let mut rows = Vec::new();
        for level in [1, 3, 4, 5, 6, 9] {
            rows.push((
                "gzip",
                level,
                runs(&|| {
                    let mut e =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
                    e.write_all(&data).unwrap();
                    e.finish().unwrap().len()
                }),
            ));
        }
        for level in [1, 3, 4, 5, 6, 9, 11] {
            rows.push((
                "br",
                level,
                runs(&|| {
                    let mut e = brotli::CompressorWriter::new(Vec::new(), 16384, level, 20);
                    e.write_all(&data).unwrap();
                    e.into_inner().len()
                }),
            ));
        }
        for level in [1, 3, 5, 7, 9, 19] {
            rows.push((
                "zstd",
                level,
                runs(&|| zstd::bulk::compress(&data, level as i32).unwrap().len()),
            ));
        }
        for (c, l, (size, secs)) in rows {
            println!(
                "{c:5} {l:5} {size:7} {:6.3} {:6.0} {:6.0}",
                size as f64 / data.len() as f64,
                secs * 1e6,
                data.len() as f64 / secs / 1e6
            );
        }
    }
}
