//! The committed `docs/openapi.json` is exactly what the code generates.
//!
//! Regenerate after changing a route or schema: `BUCKET_UPDATE_OPENAPI=1 cargo test -p bucket-api --test openapi`.

use std::path::PathBuf;

#[test]
fn committed_spec_matches_the_generated_one() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    let generated = bucket_api::openapi::spec_json().expect("the spec serializes");
    if std::env::var_os("BUCKET_UPDATE_OPENAPI").is_some() {
        std::fs::create_dir_all(path.parent().expect("docs/ has a parent")).expect("create docs/");
        std::fs::write(&path, &generated).expect("write docs/openapi.json");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json is out of date with the code; regenerate it with\n\
         BUCKET_UPDATE_OPENAPI=1 cargo test -p bucket-api --test openapi\nand commit the result"
    );
}
