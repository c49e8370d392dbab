//! The patched zstd (vendor/zstd/PATCH.md) reuses bulk contexts per thread: a reused context
//! must forget the dictionary and level of its last user.

#[test]
fn reused_contexts_round_trip_and_forget_their_dictionary() {
    let data = b"trailwatch trailwatch trailwatch pooled contexts ".repeat(50);
    for _ in 0..3 {
        let dict = b"trailwatch pooled contexts ".repeat(10);
        let mut c = zstd::bulk::Compressor::with_dictionary(19, &dict).unwrap();
        let with_dict = c.compress(&data).unwrap();
        drop(c);
        let mut d = zstd::bulk::Decompressor::with_dictionary(&dict).unwrap();
        assert_eq!(d.decompress(&with_dict, data.len()).unwrap(), data);
        drop(d);
        // The same contexts again, from the pool: no dictionary now, so a plain decoder (a
        // fresh context) reads what they write, and a reused decoder rejects dictionary frames.
        let mut c = zstd::bulk::Compressor::new(1).unwrap();
        let plain = c.compress(&data).unwrap();
        assert_eq!(zstd::stream::decode_all(&plain[..]).unwrap(), data);
        let mut d = zstd::bulk::Decompressor::new().unwrap();
        assert_eq!(d.decompress(&plain, data.len()).unwrap(), data);
        assert!(d.decompress(&with_dict, data.len()).is_err(), "a reused decoder kept the dictionary");
    }
}
