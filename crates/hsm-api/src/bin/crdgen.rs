//! `crdgen --out DIR`: writes the CRD manifests.

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = match (args.next().as_deref(), args.next()) {
        (Some("--out"), Some(dir)) => dir,
        _ => {
            eprintln!("usage: crdgen --out DIR");
            std::process::exit(2);
        }
    };
    match hsm_api::crdgen::write_all(std::path::Path::new(&dir)) {
        Ok(paths) => {
            for path in paths {
                println!("wrote {}", path.display());
            }
        }
        Err(e) => {
            eprintln!("crdgen: {e}");
            std::process::exit(1);
        }
    }
}
