//! Issue 16: the in-memory `products-search` index against Tantivy for the
//! search the service answers — a case-insensitive literal substring match
//! over a product's name or description, one page sorted by (name, id), and
//! the exact total count.
//!
//! Both engines get the same deterministic catalog. The Tantivy engine is
//! built the way its documentation suggests for substring search: an n-gram
//! analyser (`NgramTokenizer(3, 3)` + `LowerCaser`) over name and
//! description, a RAM index (built by the default writer, committed, merged
//! into one segment), one reused `Searcher` after commit + reload.
//! Its n-gram tokenizer gives every token position 0, so phrase queries
//! cannot check adjacency: candidates are the documents holding every query
//! trigram (`MUST` term queries; every document for queries under three
//! characters), and each candidate is verified against its lowercased text
//! kept in the index, which gives the exact count. The page is the verified
//! matches sorted by (name, id).
//!
//! Tantivy runs in two variants: `tantivy` verifies and orders from fast
//! (columnar) fields, `tantivy-store` from the doc store (stored fields).
//!
//! `--engine memory|tantivy|tantivy-store` builds and measures one engine in
//! this process (RSS growth is only meaningful in a fresh process);
//! `--engine all` (the default) runs each of them in a child process, then
//! checks that all gave the same totals and first pages and prints the
//! markdown tables of RESULTS.md.

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use products_search::SearchIndex;
use tantivy::{
    collector::DocSetCollector,
    query::{AllQuery, BooleanQuery, Occur, Query, TermQuery},
    schema::{IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value, STORED, STRING},
    tokenizer::{LowerCaser, NgramTokenizer, TextAnalyzer, TokenStream},
    DocAddress, Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, TantivyDocument, Term,
};

/// The queries of the comparison. The last two show where the engines'
/// case-insensitivity differs (see RESULTS.md); they are not expected to agree.
const QUERIES: [&str; 10] = [
    "widget-42",
    "widget-4242",
    "a",
    "crème",
    "straße",
    "zzz-none",
    "widget",
    ".*",
    "quetzal",
    "σοφία",
];
const SEMANTIC_QUERIES: [&str; 2] = ["ſtraße", "οδός"];
/// After the updates: the renamed products.
const RENAMED_QUERY: &str = "renamed";
/// The service's default page size.
const PAGE: usize = 10;

const WORDS: &[&str] = &[
    "Crème",
    "Straße",
    "ΣΟΦΊΑ",
    "Ørsted",
    "ΟΔΌΣ",
    "Café",
    "Jalapeño",
    "Smørrebrød",
    "Köln",
    "Ærø",
    "steel",
    "oak",
    "linen",
    "cotton",
    "walnut",
    "maple",
    "bamboo",
    "copper",
    "brass",
    "glass",
    "ceramic",
    "leather",
    "wool",
    "silk",
    "granite",
    "marble",
    "slate",
    "cedar",
    "ash",
    "pine",
    "birch",
    "teak",
    "mug",
    "bowl",
    "plate",
    "lamp",
    "chair",
    "table",
    "stool",
    "shelf",
    "rug",
    "blanket",
    "pillow",
    "kettle",
    "teapot",
    "vase",
    "basket",
    "mirror",
    "clock",
    "candle",
    "jar",
    "tray",
    "board",
    "knife",
    "spoon",
    "fork",
    "pan",
    "pot",
    "bottle",
    "flask",
    "box",
    "crate",
    "desk",
    "bench",
    "cabinet",
    "drawer",
    "hook",
    "rack",
    "stand",
    "holder",
    "small",
    "large",
    "round",
    "square",
    "tall",
    "low",
    "light",
    "heavy",
    "classic",
    "modern",
    "rustic",
    "vintage",
    "handmade",
    "sturdy",
    "soft",
    "warm",
    "bright",
    "dark",
    "blue",
    "green",
    "red",
    "white",
    "black",
    "grey",
    "amber",
    "ivory",
    "olive",
    "navy",
    "for",
    "with",
    "and",
    "the",
    "kitchen",
    "garden",
    "office",
    "bedroom",
    "studio",
    "travel",
    "everyday",
    "premium",
];
/// Words that each appear in about one product in a thousand.
const RARE_WORDS: &[&str] = &["quetzal", "zephyr", "obsidian", "vellum"];

struct Product {
    id: String,
    name: String,
    description: String,
}

/// splitmix64: a fixed, dependency-free generator, so every run has the same catalog.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn words(&mut self, count: usize) -> String {
        (0..count)
            .map(|_| WORDS[self.below(WORDS.len())])
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Half "Bench widget-{j}" (j counting 0.. over those, as the service's
/// benchmark), half 2-4 words; every description 5-15 words, now and then
/// with a rare word. Ids are 24 hex digits in no particular order.
fn catalog(products: usize) -> Vec<Product> {
    let mut rng = Rng(16);
    (0..products)
        .map(|i| {
            let id = format!("{:016x}{:08x}", rng.next(), i);
            let name = if i % 2 == 0 {
                format!("Bench widget-{}", i / 2)
            } else {
                let count = 2 + rng.below(3);
                rng.words(count)
            };
            let count = 5 + rng.below(11);
            let mut description = rng.words(count);
            if rng.below(1000) == 0 {
                description.push(' ');
                description.push_str(RARE_WORDS[rng.below(RARE_WORDS.len())]);
            }
            Product {
                id,
                name,
                description,
            }
        })
        .collect()
}

/// What one query gave: the total and the first page's ids.
type Hits = (usize, Vec<String>);

trait Engine {
    fn search(&self, query: &str) -> Result<Hits>;
    /// Renames products; returns a line describing the cost.
    fn apply_updates(&mut self, updates: &[(usize, String)], batch: usize) -> Result<String>;
}

struct Memory<'a> {
    catalog: &'a [Product],
    index: SearchIndex<u32>,
}

impl<'a> Memory<'a> {
    fn build(catalog: &'a [Product]) -> Self {
        let mut index = SearchIndex::new();
        for (i, p) in catalog.iter().enumerate() {
            index.upsert(&p.id, 1, &p.name, &p.description, i as u32);
        }
        Memory { catalog, index }
    }
}

impl Engine for Memory<'_> {
    fn search(&self, query: &str) -> Result<Hits> {
        let hits = self.index.search(query, 0, PAGE);
        let ids = hits
            .values
            .iter()
            .map(|&i| self.catalog[i as usize].id.clone())
            .collect();
        Ok((hits.total, ids))
    }

    fn apply_updates(&mut self, updates: &[(usize, String)], _batch: usize) -> Result<String> {
        let mut each = Vec::with_capacity(updates.len());
        let started = Instant::now();
        for (i, name) in updates {
            let p = &self.catalog[*i];
            let t = Instant::now();
            let rev = self.index.revision(&p.id).unwrap_or(0) + 1;
            self.index
                .upsert(&p.id, rev, name, &p.description, *i as u32);
            each.push(t.elapsed());
        }
        let total = started.elapsed();
        each.sort();
        Ok(format!(
            "{} upserts in {:.1} ms: p50 {} µs, p99 {} µs, max {} µs per upsert (searchable at once)",
            updates.len(),
            ms(total),
            us(pct(&each, 50.0)),
            us(pct(&each, 99.0)),
            us(*each.last().unwrap_or(&Duration::ZERO)),
        ))
    }
}

struct Tantivy<'a> {
    catalog: &'a [Product],
    index: Index,
    writer: IndexWriter,
    reader: IndexReader,
    searcher: Searcher,
    fields: Fields,
    analyzer: TextAnalyzer,
    /// Verify and sort from the doc store rather than from fast fields.
    verify_stored: bool,
}

#[derive(Clone, Copy)]
struct Fields {
    id: tantivy::schema::Field,
    name: tantivy::schema::Field,
    /// Lowercased name and description, stored only: the verification text.
    name_lc: tantivy::schema::Field,
    description_lc: tantivy::schema::Field,
    /// Name, NUL, id: sorts as (name, id) for names without NUL.
    sort_key: tantivy::schema::Field,
    /// Trigrams of name and description (two values: no trigram spans them).
    grams: tantivy::schema::Field,
}

/// Lowercases as Tantivy's `LowerCaser` does: `char::to_lowercase`, char by
/// char (no final-sigma rule).
fn lowercase(text: &str) -> String {
    text.chars().flat_map(char::to_lowercase).collect()
}

impl<'a> Tantivy<'a> {
    fn build(catalog: &'a [Product], verify_stored: bool) -> Result<Self> {
        let mut schema = Schema::builder();
        let id = schema.add_text_field("id", STRING | STORED);
        let name = schema.add_text_field("name", STORED);
        // Fast (columnar) copies for verification and order, or stored ones.
        let column = |stored: bool| {
            if stored {
                TextOptions::from(STORED)
            } else {
                TextOptions::default().set_fast("raw")
            }
        };
        let name_lc = schema.add_text_field("name_lc", column(verify_stored));
        let description_lc = schema.add_text_field("description_lc", column(verify_stored));
        let sort_key = schema.add_text_field("sort_key", column(verify_stored));
        let grams_options = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer("trigram")
                .set_index_option(IndexRecordOption::Basic),
        );
        let grams = schema.add_text_field("grams", grams_options);
        let index = Index::create_in_ram(schema.build());
        let analyzer = TextAnalyzer::builder(NgramTokenizer::new(3, 3, false)?)
            .filter(LowerCaser)
            .build();
        index.tokenizers().register("trigram", analyzer.clone());
        let fields = Fields {
            id,
            name,
            name_lc,
            description_lc,
            sort_key,
            grams,
        };

        // The default writer: one indexing thread per core, a 100 MB budget.
        let mut writer: IndexWriter = index.writer(100_000_000)?;
        for p in catalog {
            writer.add_document(document(fields, p, &p.name))?;
        }
        writer.commit()?;
        // One segment for a read-mostly index (what a merge policy converges to).
        let segments = index.searchable_segment_ids()?;
        if segments.len() > 1 {
            writer.merge(&segments).wait()?;
        }
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let searcher = reader.searcher();
        Ok(Tantivy {
            catalog,
            index,
            writer,
            reader,
            searcher,
            fields,
            analyzer,
            verify_stored,
        })
    }

    fn candidates(&self, query: &str) -> Result<Vec<DocAddress>> {
        let mut analyzer = self.analyzer.clone();
        let mut stream = analyzer.token_stream(query);
        let mut terms = Vec::new();
        while stream.advance() {
            terms.push(stream.token().text.clone());
        }
        terms.sort();
        terms.dedup();
        let query: Box<dyn Query> = if terms.is_empty() {
            Box::new(AllQuery)
        } else {
            Box::new(BooleanQuery::new(
                terms
                    .into_iter()
                    .map(|gram| {
                        let term = Term::from_field_text(self.fields.grams, &gram);
                        let q: Box<dyn Query> =
                            Box::new(TermQuery::new(term, IndexRecordOption::Basic));
                        (Occur::Must, q)
                    })
                    .collect(),
            ))
        };
        let mut docs: Vec<DocAddress> = self
            .searcher
            .search(&query, &DocSetCollector)?
            .into_iter()
            .collect();
        docs.sort(); // doc-store order: each compressed block is read once
        Ok(docs)
    }
}

fn document(f: Fields, p: &Product, name: &str) -> TantivyDocument {
    let mut doc = TantivyDocument::default();
    doc.add_text(f.id, &p.id);
    doc.add_text(f.name, name);
    doc.add_text(f.name_lc, lowercase(name));
    doc.add_text(f.description_lc, lowercase(&p.description));
    doc.add_text(f.sort_key, format!("{name}\0{}", p.id));
    doc.add_text(f.grams, name);
    doc.add_text(f.grams, &p.description);
    doc
}

impl Tantivy<'_> {
    /// Verification and order from the doc store (stored fields).
    fn search_stored(&self, query: &str) -> Result<Hits> {
        let needle = lowercase(query);
        let f = self.fields;
        let text = |doc: &TantivyDocument, field| {
            doc.get_first(field)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        let mut matches: Vec<(String, String)> = Vec::new();
        for address in self.candidates(query)? {
            let doc: TantivyDocument = self.searcher.doc(address)?;
            let hit = [f.name_lc, f.description_lc].into_iter().any(|field| {
                doc.get_first(field)
                    .and_then(|v| v.as_str())
                    .is_some_and(|t| t.contains(&needle))
            });
            if hit {
                let name = text(&doc, f.name).ok_or_else(|| anyhow!("no name"))?;
                let id = text(&doc, f.id).ok_or_else(|| anyhow!("no id"))?;
                matches.push((name, id));
            }
        }
        let total = matches.len();
        if total > PAGE {
            matches.select_nth_unstable(PAGE);
            matches.truncate(PAGE);
        }
        matches.sort_unstable();
        Ok((total, matches.into_iter().map(|(_, id)| id).collect()))
    }

    /// Verification from fast fields (columnar, dictionary encoded: each
    /// segment has a sorted term dictionary and a term ordinal per doc). The
    /// candidates' distinct ordinals are looked up in one ordered pass over
    /// the dictionary (`sorted_ords_to_term_cb`); the page comes from the
    /// sort-key column, whose ordinals are in key order within a segment, so
    /// each segment only spells out its first `PAGE` keys.
    fn search_fast(&self, query: &str) -> Result<Hits> {
        let needle = lowercase(query);
        let finder = memchr::memmem::Finder::new(needle.as_bytes());
        let candidates = self.candidates(query)?;
        let mut total = 0;
        let mut page: Vec<(String, DocAddress)> = Vec::new();
        for (segment_ord, reader) in self.searcher.segment_readers().iter().enumerate() {
            let start = candidates.partition_point(|a| (a.segment_ord as usize) < segment_ord);
            let end = candidates.partition_point(|a| (a.segment_ord as usize) <= segment_ord);
            if start == end {
                continue;
            }
            let docs: Vec<u32> = candidates[start..end].iter().map(|a| a.doc_id).collect();
            let fast = reader.fast_fields();
            let column = |name: &str| {
                fast.str(name)?
                    .ok_or_else(|| anyhow!("no fast field {name}"))
            };
            let (name_lc, description_lc, sort_key) = (
                column("name_lc")?,
                column("description_lc")?,
                column("sort_key")?,
            );
            // The ordinal of each candidate's value, and whether that term holds the query.
            let matching = |col: &tantivy::columnar::StrColumn| -> Result<Vec<bool>> {
                let ords: Vec<u64> = docs
                    .iter()
                    .map(|&doc| col.term_ords(doc).next().unwrap_or(u64::MAX))
                    .collect();
                let mut distinct: Vec<u64> =
                    ords.iter().copied().filter(|&o| o != u64::MAX).collect();
                distinct.sort_unstable();
                distinct.dedup();
                let mut hits = Vec::with_capacity(distinct.len());
                let dictionary = col.dictionary();
                if distinct.len().saturating_mul(50) < dictionary.num_terms() {
                    // Few: one block lookup each beats a pass over the dictionary.
                    let mut term = Vec::new();
                    for &ord in &distinct {
                        dictionary.ord_to_term(ord, &mut term)?;
                        hits.push(finder.find(&term).is_some());
                    }
                } else {
                    dictionary.sorted_ords_to_term_cb(&distinct, |term| {
                        hits.push(finder.find(term).is_some())
                    })?;
                }
                Ok(ords
                    .iter()
                    .map(|o| distinct.binary_search(o).is_ok_and(|at| hits[at]))
                    .collect())
            };
            let (in_name, in_description) = (matching(&name_lc)?, matching(&description_lc)?);
            let mut keys: Vec<(u64, u32)> = Vec::new();
            for (at, &doc) in docs.iter().enumerate() {
                if in_name[at] || in_description[at] {
                    let key = sort_key
                        .term_ords(doc)
                        .next()
                        .ok_or_else(|| anyhow!("no sort key"))?;
                    keys.push((key, doc));
                }
            }
            total += keys.len();
            if keys.len() > PAGE {
                keys.select_nth_unstable(PAGE);
                keys.truncate(PAGE);
            }
            for (ord, doc) in keys {
                let mut key = String::new();
                sort_key.ord_to_str(ord, &mut key)?;
                page.push((key, DocAddress::new(segment_ord as u32, doc)));
            }
        }
        page.sort_unstable();
        page.truncate(PAGE);
        let ids = page
            .into_iter()
            .map(|(key, _)| {
                key.rsplit_once('\0')
                    .map(|(_, id)| id.to_owned())
                    .ok_or_else(|| anyhow!("bad key"))
            })
            .collect::<Result<_>>()?;
        Ok((total, ids))
    }
}

impl Engine for Tantivy<'_> {
    fn search(&self, query: &str) -> Result<Hits> {
        if self.verify_stored {
            self.search_stored(query)
        } else {
            self.search_fast(query)
        }
    }

    fn apply_updates(&mut self, updates: &[(usize, String)], batch: usize) -> Result<String> {
        let (mut writes, mut commits) = (Vec::new(), Vec::new());
        let started = Instant::now();
        for chunk in updates.chunks(batch) {
            let t = Instant::now();
            for (i, name) in chunk {
                let p = &self.catalog[*i];
                self.writer
                    .delete_term(Term::from_field_text(self.fields.id, &p.id));
                self.writer.add_document(document(self.fields, p, name))?;
            }
            writes.push(t.elapsed());
            let t = Instant::now();
            self.writer.commit()?;
            self.reader.reload()?;
            self.searcher = self.reader.searcher();
            commits.push(t.elapsed());
        }
        let total = started.elapsed();
        commits.sort();
        let segments = self.index.searchable_segment_ids()?.len();
        Ok(format!(
            "{} updates in {} batches of {batch}, {:.1} ms in all: delete_term + add_document {:.0} µs per change; \
             commit + reload per batch p50 {:.1} ms, max {:.1} ms; {segments} segments after",
            updates.len(),
            commits.len(),
            ms(total),
            us(writes.iter().sum::<Duration>()) as f64 / updates.len() as f64,
            ms(pct(&commits, 50.0)),
            ms(*commits.last().unwrap_or(&Duration::ZERO)),
        ))
    }
}

struct Opts {
    engine: String,
    products: usize,
    iterations: usize,
    warmup: usize,
    max_seconds: f64,
    updates: usize,
    batch: usize,
    out: Option<PathBuf>,
}

fn parse_args() -> Result<Opts> {
    let mut opts = Opts {
        engine: "all".into(),
        products: 100_000,
        iterations: 2000,
        warmup: 20,
        max_seconds: 60.0,
        updates: 1000,
        batch: 100,
        out: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| anyhow!("{flag} needs a value"));
        match flag.as_str() {
            "--engine" => opts.engine = value()?,
            "--products" => opts.products = value()?.parse().context("--products")?,
            "--iterations" => opts.iterations = value()?.parse().context("--iterations")?,
            "--warmup" => opts.warmup = value()?.parse().context("--warmup")?,
            "--max-seconds" => opts.max_seconds = value()?.parse().context("--max-seconds")?,
            "--updates" => opts.updates = value()?.parse().context("--updates")?,
            "--batch" => opts.batch = value()?.parse().context("--batch")?,
            "--out" => opts.out = Some(value()?.into()),
            "-h" | "--help" => {
                println!(
                    "search-engines [--engine all|memory|tantivy|tantivy-store] [--products N] [--iterations N] \
                     [--warmup N] [--max-seconds S] [--updates N] [--batch N] [--out FILE]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other} (try --help)"),
        }
    }
    if opts.batch == 0 {
        bail!("--batch must be positive");
    }
    Ok(opts)
}

fn rss_kib() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or_else(|| anyhow!("no VmRSS"))?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow!("bad VmRSS"))?
        .parse()?)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p / 100.0).round() as usize]
}
fn us(d: Duration) -> u128 {
    d.as_micros()
}
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One engine in this process: build, queries, updates. Writes a
/// tab-separated line per measurement to `--out` (read back by `all`).
fn run_one(opts: &Opts) -> Result<()> {
    let catalog = catalog(opts.products);
    let before = rss_kib()?;
    let started = Instant::now();
    let mut engine: Box<dyn Engine + '_> = match opts.engine.as_str() {
        "memory" => Box::new(Memory::build(&catalog)),
        "tantivy" => Box::new(Tantivy::build(&catalog, false)?),
        "tantivy-store" => Box::new(Tantivy::build(&catalog, true)?),
        other => bail!("unknown engine {other}"),
    };
    let build = started.elapsed();
    let after = rss_kib()?;
    let mut out = String::new();
    let mut line = |fields: Vec<String>| {
        println!("{}", fields.join("\t"));
        out.push_str(&fields.join("\t"));
        out.push('\n');
    };
    line(vec![
        "build".into(),
        format!("{:.0}", ms(build)),
        format!("{}", (after.saturating_sub(before)) / 1024),
    ]);
    for query in QUERIES.iter().chain(&SEMANTIC_QUERIES) {
        for _ in 0..opts.warmup {
            engine.search(query)?;
        }
        let (total, ids) = engine.search(query)?;
        let mut times = Vec::with_capacity(opts.iterations);
        let deadline = Instant::now() + Duration::from_secs_f64(opts.max_seconds);
        while times.len() < opts.iterations && (times.is_empty() || Instant::now() < deadline) {
            let t = Instant::now();
            let hits = engine.search(query)?;
            times.push(t.elapsed());
            std::hint::black_box(hits);
        }
        times.sort();
        line(vec![
            "query".into(),
            (*query).into(),
            total.to_string(),
            us(pct(&times, 50.0)).to_string(),
            us(pct(&times, 99.0)).to_string(),
            times.len().to_string(),
            ids.join(","),
        ]);
    }
    // Rename products spread over the catalog; then they must be searchable.
    let step = (catalog.len() / opts.updates.max(1)).max(1);
    let updates: Vec<(usize, String)> = (0..opts.updates.min(catalog.len()))
        .map(|k| (k * step, format!("Renamed item {k}")))
        .collect();
    let cost = engine.apply_updates(&updates, opts.batch)?;
    line(vec!["updates".into(), cost]);
    let (total, ids) = engine.search(RENAMED_QUERY)?;
    line(vec![
        "query".into(),
        RENAMED_QUERY.into(),
        total.to_string(),
        "-".into(),
        "-".into(),
        "1".into(),
        ids.join(","),
    ]);
    line(vec![
        "rss_end".into(),
        format!("{}", rss_kib()?.saturating_sub(before) / 1024),
    ]);
    if let Some(path) = &opts.out {
        std::fs::write(path, out)?;
    }
    Ok(())
}

/// The engines, each in a child process; then the comparison and tables.
fn run_all(opts: &Opts) -> Result<()> {
    const ENGINES: [&str; 3] = ["memory", "tantivy", "tantivy-store"];
    let exe = std::env::current_exe()?;
    let mut results: Vec<Vec<Vec<String>>> = Vec::new();
    for engine in ENGINES {
        let out = std::env::temp_dir().join(format!(
            "search-engines-{engine}-{}.tsv",
            std::process::id()
        ));
        eprintln!("running {engine} ...");
        let status = Command::new(&exe)
            .args(["--engine", engine, "--products", &opts.products.to_string()])
            .args([
                "--iterations",
                &opts.iterations.to_string(),
                "--warmup",
                &opts.warmup.to_string(),
            ])
            .args([
                "--max-seconds",
                &opts.max_seconds.to_string(),
                "--updates",
                &opts.updates.to_string(),
            ])
            .args([
                "--batch",
                &opts.batch.to_string(),
                "--out",
                out.to_str().ok_or_else(|| anyhow!("path"))?,
            ])
            .stdout(std::process::Stdio::null())
            .status()?;
        if !status.success() {
            bail!("{engine} run failed: {status}");
        }
        let text = std::fs::read_to_string(&out)?;
        std::fs::remove_file(&out).ok();
        results.push(
            text.lines()
                .map(|l| l.split('\t').map(str::to_owned).collect())
                .collect(),
        );
    }
    let find = |rows: &[Vec<String>], kind: &str| {
        rows.iter()
            .find(|r| r[0] == kind)
            .cloned()
            .unwrap_or_default()
    };
    let row = |label: &str, cell: &dyn Fn(&[Vec<String>]) -> String| {
        let cells: Vec<String> = results.iter().map(|r| cell(r)).collect();
        println!("| {label} | {} |", cells.join(" | "));
    };
    println!("catalog: {} products, page size {PAGE}\n", opts.products);
    println!("| | {} |\n|---|---|---|---|", ENGINES.join(" | "));
    row("build (wall)", &|r| format!("{} ms", find(r, "build")[1]));
    row("RSS growth after build", &|r| {
        format!("{} MiB", find(r, "build")[2])
    });
    row("RSS growth at the end", &|r| {
        format!("{} MiB", find(r, "rss_end")[1])
    });
    row("updates", &|r| find(r, "updates")[1].clone());
    println!(
        "\n| query | total | {} p50 / p99 µs | iterations | same total and first page in all |\n|---|---|---|---|---|---|---|",
        ENGINES.join(" p50 / p99 µs | ")
    );
    let mut mismatches = 0;
    let queries: Vec<Vec<Vec<String>>> = results
        .iter()
        .map(|rows| rows.iter().filter(|r| r[0] == "query").cloned().collect())
        .collect();
    for (i, m) in queries[0].iter().enumerate() {
        let others: Vec<&Vec<String>> = queries.iter().map(|q| &q[i]).collect();
        let same = others.iter().all(|o| o[2] == m[2] && o[6] == m[6]);
        let expected = SEMANTIC_QUERIES.contains(&m[1].as_str());
        if !same && !expected {
            mismatches += 1;
            for (engine, o) in ENGINES.iter().zip(&others) {
                eprintln!("MISMATCH {:?}: {engine} {} [{}]", m[1], o[2], o[6]);
            }
        }
        let verdict = match (same, expected) {
            (true, _) => "yes",
            (false, true) => "no (semantics, expected)",
            (false, false) => "**NO**",
        };
        let totals: Vec<&str> = others.iter().map(|o| o[2].as_str()).collect();
        let times: Vec<String> = others
            .iter()
            .map(|o| format!("{} / {}", o[3], o[4]))
            .collect();
        let iterations: Vec<&str> = others.iter().map(|o| o[5].as_str()).collect();
        println!(
            "| `{}` | {} | {} | {} | {verdict} |",
            m[1],
            totals.join(" / "),
            times.join(" | "),
            iterations.join(" / ")
        );
    }
    if mismatches > 0 {
        bail!("{mismatches} unexpected mismatches");
    }
    eprintln!("no unexpected mismatches");
    Ok(())
}

fn main() -> Result<()> {
    let opts = parse_args()?;
    match opts.engine.as_str() {
        "all" => run_all(&opts),
        _ => run_one(&opts),
    }
}
