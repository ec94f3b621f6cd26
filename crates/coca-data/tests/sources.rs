//! Each source type on small collections built in a temporary directory.

use std::fs;
use std::path::{Path, PathBuf};

use coca_data::{open, CsvOptions, DataError, FolderSource, ImageData, Input, Sample};

fn write(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

fn collect(input: &Input) -> (Vec<Sample>, Vec<DataError>) {
    let mut ok = Vec::new();
    let mut errors = Vec::new();
    for item in open(input).unwrap() {
        match item {
            Ok(s) => ok.push(s),
            Err(e) => errors.push(e),
        }
    }
    (ok, errors)
}

fn keys(samples: &[Sample]) -> Vec<&str> {
    samples.iter().map(|s| s.key.as_str()).collect()
}

fn texts(samples: &[Sample]) -> Vec<Option<&str>> {
    samples.iter().map(|s| s.text.as_deref()).collect()
}

#[test]
fn folder_is_walked_recursively_in_name_order_with_sibling_captions() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(&root.join("b.png"), b"png");
    write(&root.join("b.txt"), b"  a blue square \n");
    write(&root.join("a.JPG"), b"jpg");
    write(&root.join("sub/c.webp"), b"webp");
    write(&root.join("sub/c.txt"), b"a nested one");
    write(&root.join("sub/deeper/d.tiff"), b"tiff");
    write(&root.join("sub/deeper/d.txt"), b"   \n");
    write(&root.join("notes.txt"), b"not a caption of anything");
    write(&root.join("data.json"), b"{}");
    write(&root.join("e.gif"), b"gif");
    write(&root.join("e.txt"), &[0xff, 0xfe, 0x00]);
    write(&root.join("f.bmp"), b"bmp");

    let (samples, errors) = collect(&Input::Folder(root.to_path_buf()));
    assert_eq!(
        keys(&samples),
        ["a.JPG", "b.png", "f.bmp", "sub/c.webp", "sub/deeper/d.tiff"]
    );
    assert_eq!(
        texts(&samples),
        [
            None,
            Some("a blue square"),
            None,
            Some("a nested one"),
            None
        ]
    );
    assert_eq!(samples[1].image, ImageData::Path(root.join("b.png")));
    // The non-UTF-8 caption makes its sample an error item; the walk goes on.
    assert_eq!(errors.len(), 1);
    let msg = errors[0].to_string();
    assert!(msg.contains("e.txt") && msg.contains("not UTF-8"), "{msg}");
}

#[test]
fn video_files_are_walked_only_when_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(&root.join("a.png"), b"png");
    write(&root.join("b.MP4"), b"mp4");
    write(&root.join("b.txt"), b"a clip");
    write(&root.join("clips/c.avi"), b"avi");
    write(&root.join("frames/0001.png"), b"png");
    write(&root.join("d.gif"), b"gif");
    let (images, _) = collect(&Input::Folder(root.to_path_buf()));
    assert_eq!(keys(&images), ["a.png", "d.gif", "frames/0001.png"]);
    let with_videos: Vec<Sample> = FolderSource::new(root)
        .unwrap()
        .including_videos()
        .map(Result::unwrap)
        .collect();
    // A folder of frames stays a folder of images; video files join, with their sibling captions.
    assert_eq!(
        keys(&with_videos),
        ["a.png", "b.MP4", "clips/c.avi", "d.gif", "frames/0001.png"]
    );
    assert_eq!(with_videos[1].text.as_deref(), Some("a clip"));
}

#[test]
fn missing_folder_and_file_instead_of_folder_fail_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let err = open(&Input::Folder(missing)).err().unwrap();
    assert!(err.to_string().contains("nope: no such file"), "{err}");
    let file = dir.path().join("file.png");
    write(&file, b"x");
    let err = open(&Input::Folder(file)).err().unwrap();
    assert!(err.to_string().contains("not a directory"), "{err}");
}

#[test]
fn file_list_reads_one_path_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("x/a.png");
    let b = dir.path().join("b.jpg");
    write(&a, b"a");
    write(&dir.path().join("x/a.txt"), b"caption of a");
    let mut list = format!("{}\n\n  {}  \r\n", a.display(), b.display()).into_bytes();
    list.extend_from_slice(b"bad\xff\n");
    list.extend_from_slice(b"last-without-newline.png");
    let list_path = dir.path().join("list.txt");
    write(&list_path, &list);

    let (samples, errors) = collect(&Input::List(list_path));
    assert_eq!(samples.len(), 3);
    assert_eq!(samples[0].image, ImageData::Path(a.clone()));
    assert_eq!(samples[0].text.as_deref(), Some("caption of a"));
    // Listed files are not checked here: an image that does not exist fails when it is decoded.
    assert_eq!(samples[1].image, ImageData::Path(b));
    assert_eq!(samples[1].text, None);
    assert_eq!(samples[2].key, "last-without-newline.png");
    assert_eq!(errors.len(), 1);
    let msg = errors[0].to_string();
    assert!(
        msg.contains("list.txt:4:") && msg.contains("not UTF-8"),
        "{msg}"
    );
}

#[test]
fn csv_uses_open_clip_defaults_tab_filepath_title() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("train.tsv");
    write(
        &csv,
        b"title\tfilepath\textra\n\
          a cat\timgs/cat.jpg\t1\n\
          \"quoted, \"\"caption\"\"\"\timgs/q.png\t2\n\
          too\tmany\tfields\there\n\
          \t\t3\n\
          \timgs/uncaptioned.png\t4\n",
    );
    let input = Input::Csv {
        path: csv,
        options: CsvOptions::default(),
    };
    let (samples, errors) = collect(&input);
    assert_eq!(
        keys(&samples),
        ["imgs/cat.jpg", "imgs/q.png", "imgs/uncaptioned.png"]
    );
    assert_eq!(
        texts(&samples),
        [Some("a cat"), Some("quoted, \"caption\""), None]
    );
    assert_eq!(
        samples[0].image,
        ImageData::Path(PathBuf::from("imgs/cat.jpg"))
    );
    let msgs: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert!(msgs[0].contains("train.tsv: line 4"), "{msgs:?}");
    assert!(
        msgs[1].contains("line 5") && msgs[1].contains("empty image path"),
        "{msgs:?}"
    );
}

#[test]
fn csv_flags_choose_columns_and_separator() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("pairs.csv");
    write(
        &csv,
        b"url,caption,path\nhttp://x,a red car,car.png\nhttp://y,a tree,tree.jpg\n",
    );
    let options = CsvOptions {
        img_key: "path".into(),
        caption_key: Some("caption".into()),
        separator: coca_data::parse_separator(",").unwrap(),
    };
    let input = Input::Csv {
        path: csv.clone(),
        options: options.clone(),
    };
    let (samples, errors) = collect(&input);
    assert!(errors.is_empty());
    assert_eq!(keys(&samples), ["car.png", "tree.jpg"]);
    assert_eq!(texts(&samples), [Some("a red car"), Some("a tree")]);

    let no_captions = Input::Csv {
        path: csv.clone(),
        options: CsvOptions {
            caption_key: None,
            ..options.clone()
        },
    };
    let (samples, _) = collect(&no_captions);
    assert_eq!(texts(&samples), [None, None]);

    // The defaults (tab, filepath/title) do not fit a comma file: the error lists the header it saw.
    let wrong = Input::Csv {
        path: csv,
        options: CsvOptions {
            separator: b',',
            ..CsvOptions::default()
        },
    };
    let err = open(&wrong).err().unwrap().to_string();
    assert!(
        err.contains("no column `filepath`")
            && err.contains("--csv-img-key")
            && err.contains("url, caption, path"),
        "{err}"
    );
}

#[test]
fn separators_parse_like_a_shell_passes_them() {
    assert_eq!(coca_data::parse_separator("\\t").unwrap(), b'\t');
    assert_eq!(coca_data::parse_separator("\t").unwrap(), b'\t');
    assert_eq!(coca_data::parse_separator("tab").unwrap(), b'\t');
    assert_eq!(coca_data::parse_separator(";").unwrap(), b';');
    for bad in ["", ";;", "é"] {
        let err = coca_data::parse_separator(bad).unwrap_err().to_string();
        assert!(err.contains("bad CSV separator"), "{err}");
    }
}

/// A tar shard from (name, bytes) entries, in order.
fn make_shard(path: &Path, files: &[(&str, &[u8])]) {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, name, *data).unwrap();
    }
    write(path, &builder.into_inner().unwrap());
}

#[test]
fn shards_group_files_by_key_across_a_brace_pattern() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_shard(
        &d.join("00000.tar"),
        &[
            ("000000000.jpg", b"jpeg-0"),
            ("000000000.txt", b"first caption\n"),
            ("000000000.json", b"{\"url\": \"x\"}"),
            ("000000001.png", b"png-1"),
            ("000000001.jpg", b"jpeg-1"),
        ],
    );
    make_shard(
        &d.join("00001.tar"),
        &[
            ("000000002.txt", b"no image here"),
            ("000000002.json", b"{}"),
            ("sub/000000003.WEBP", b"webp-3"),
            ("sub/000000003.txt", b"third"),
        ],
    );
    let pattern = format!("{}/{{00000..00001}}.tar", d.display());
    let (samples, errors) = collect(&Input::Shards(pattern));
    assert_eq!(keys(&samples), ["000000000", "000000001", "sub/000000003"]);
    assert_eq!(
        texts(&samples),
        [Some("first caption"), None, Some("third")]
    );
    // jpg is preferred over png when a sample has both, as in WebDataset's "jpg;png;jpeg;webp".
    match &samples[1].image {
        ImageData::Bytes { name, data } => {
            assert!(name.ends_with("00000.tar:000000001.jpg"), "{name}");
            assert_eq!(data, b"jpeg-1");
        }
        other => panic!("expected bytes, got {other:?}"),
    }
    assert_eq!(errors.len(), 1);
    let msg = errors[0].to_string();
    assert!(
        msg.contains("00001.tar")
            && msg.contains("`000000002` has no image")
            && msg.contains("txt"),
        "{msg}"
    );
}

#[test]
fn shard_records_keep_every_file_of_a_sample() {
    let dir = tempfile::tempdir().unwrap();
    let shard = dir.path().join("0.tar");
    make_shard(
        &shard,
        &[
            ("a.png", b"png-a"),
            ("a.cls", b"3\n"),
            ("a.CLS", b"ignored: the first file of an extension wins"),
            ("b.cls", b"1"),
        ],
    );
    let records: Vec<_> = coca_data::ShardRecords::open(shard.to_str().unwrap())
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].key, "a");
    assert_eq!(records[0].file("cls"), Some(&b"3\n"[..]));
    assert_eq!(records[0].file("txt"), None);
    assert!(records[0].label("cls").ends_with("0.tar:a.cls"));
    // As a sample, the record is what ShardSource yields: the image, or an error without one.
    let sample = records[0].clone().into_sample().unwrap();
    assert_eq!(sample.key, "a");
    assert!(matches!(sample.image, ImageData::Bytes { ref data, .. } if data == b"png-a"));
    let err = records[1].clone().into_sample().unwrap_err().to_string();
    assert!(err.contains("`b` has no image (found: cls)"), "{err}");
}

#[test]
fn truncated_shard_is_reported_with_name_and_offset_and_the_rest_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let big = vec![7u8; 3000];
    make_shard(
        &d.join("a-0.tar"),
        &[
            ("k0.jpg", b"jpeg-0"),
            ("k0.txt", b"zero"),
            ("k1.jpg", &big),
            ("k1.txt", b"one"),
        ],
    );
    // Cut inside k1.jpg's data. Entries: k0.jpg header at 0, data at 512; k0.txt header 1024, data 1536;
    // k1.jpg header 2048, data 2560. Keeping 1000 bytes of its data leaves 3560 bytes.
    let full = fs::read(d.join("a-0.tar")).unwrap();
    fs::write(d.join("a-0.tar"), &full[..3560]).unwrap();
    make_shard(
        &d.join("a-1.tar"),
        &[("k2.png", b"png-2"), ("k2.txt", b"two")],
    );
    // A corrupt header (checksum broken) in the middle of a third shard.
    make_shard(
        &d.join("a-2.tar"),
        &[
            ("k3.jpg", b"jpeg-3"),
            ("k4.jpg", b"jpeg-4"),
            ("k5.jpg", b"jpeg-5"),
        ],
    );
    let mut bytes = fs::read(d.join("a-2.tar")).unwrap();
    bytes[1024] ^= 0x55; // first byte of k4.jpg's name
    fs::write(d.join("a-2.tar"), &bytes).unwrap();

    let pattern = format!("{}/a-{{0,missing,1,2}}.tar", d.display());
    let (samples, errors) = collect(&Input::Shards(pattern));
    assert_eq!(keys(&samples), ["k0", "k2", "k3"]);
    let msgs: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(msgs.len(), 3, "{msgs:?}");
    assert!(
        msgs[0].contains("a-0.tar: damaged tar shard at byte 3560") && msgs[0].contains("k1.jpg"),
        "{msgs:?}"
    );
    match &errors[0] {
        DataError::Shard { shard, offset, .. } => {
            assert!(shard.ends_with("a-0.tar"));
            assert_eq!(*offset, 3560);
        }
        other => panic!("{other:?}"),
    }
    assert!(msgs[1].contains("a-missing.tar: no such file"), "{msgs:?}");
    assert!(
        msgs[2].contains("a-2.tar: damaged tar shard at byte 1024") && msgs[2].contains("checksum"),
        "{msgs:?}"
    );
}

#[test]
fn shard_patterns_that_name_nothing_fail_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let pattern = format!("{}/{{0..3}}.tar", dir.path().display());
    let err = open(&Input::Shards(pattern)).err().unwrap().to_string();
    assert!(
        err.contains("no shard of") && err.contains("0.tar"),
        "{err}"
    );
    let err = open(&Input::Shards("x/{0..3.tar".into()))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("bad shard pattern") && err.contains("unbalanced"),
        "{err}"
    );
}

#[test]
fn dropping_a_shard_reader_early_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<(String, Vec<u8>)> = (0..500)
        .map(|i| (format!("{i:05}.jpg"), vec![1u8; 10]))
        .collect();
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    make_shard(&dir.path().join("s.tar"), &refs);
    let mut source = open(&Input::Shards(
        dir.path().join("s.tar").display().to_string(),
    ))
    .unwrap();
    assert_eq!(source.next().unwrap().unwrap().key, "00000");
    drop(source); // must not hang on the full queue
}
