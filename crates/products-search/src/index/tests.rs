use proptest::prelude::*;

use super::SearchIndex;

fn index_of(products: &[(&str, &str, &str)]) -> SearchIndex<String> {
    let mut index = SearchIndex::new();
    for (id, name, description) in products {
        assert!(index.upsert(id, 1, name, description, id.to_string()));
    }
    index
}

#[test]
fn matches_name_or_description_case_insensitively_in_name_then_id_order() {
    let index = index_of(&[
        ("3", "Blue MUG", "ceramic"),
        ("1", "Teapot", "goes with a mug"),
        ("2", "Blue mug", "ceramic"),
        ("4", "Plate", "flat"),
    ]);
    let hits = index.search("Mug", 0, 10);
    assert_eq!(hits.total, 3);
    assert_eq!(hits.values, ["3", "2", "1"]); // "Blue MUG" < "Blue mug" < "Teapot"
    assert_eq!(index.search("mug", 1, 1).values, ["2"]);
    assert_eq!(index.search("", 0, 10).total, 4);
    assert_eq!(index.search("u", 0, 10).total, 3);
    assert_eq!(index.search("RAM", 0, 10).values, ["3", "2"]);
    assert_eq!(index.search("nothing", 0, 10).total, 0);
    assert_eq!(
        index.search("mug", 5, 10),
        super::Hits {
            total: 3,
            values: vec![]
        }
    );
}

#[test]
fn a_match_never_spans_name_and_description() {
    let index = index_of(&[("1", "ab", "cd")]);
    assert_eq!(index.search("bc", 0, 10).total, 0);
    assert_eq!(index.search("abc", 0, 10).total, 0);
}

#[test]
fn regex_metacharacters_are_literal() {
    let index = index_of(&[("1", "a.c (x)", ""), ("2", "abc", ""), ("3", "a+b*", "[z]")]);
    assert_eq!(index.search("a.c", 0, 10).values, ["1"]);
    assert_eq!(index.search("(x)", 0, 10).values, ["1"]);
    assert_eq!(index.search("a+b*", 0, 10).values, ["3"]);
    assert_eq!(index.search("[z]", 0, 10).values, ["3"]);
    assert_eq!(index.search(".*", 0, 10).total, 0);
}

#[test]
fn changes_and_deletes_follow_revisions() {
    let mut index = SearchIndex::new();
    assert!(index.upsert("1", 1, "Red kettle", "", "v1"));
    assert!(index.upsert("1", 2, "Green kettle", "", "v2"));
    // A copy of an older revision (a replay) changes nothing.
    assert!(!index.upsert("1", 1, "Red kettle", "", "v1"));
    assert!(!index.upsert("1", 2, "Red kettle", "", "v1"));
    assert_eq!(index.search("red", 0, 10).total, 0);
    assert_eq!(index.search("kettle", 0, 10).values, ["v2"]);
    assert!(index.remove("1", 3));
    assert_eq!(index.search("kettle", 0, 10).total, 0);
    assert!(index.is_empty());
    // The delete is remembered: the older create does not bring it back.
    assert!(!index.upsert("1", 2, "Green kettle", "", "v2"));
    assert!(!index.remove("1", 3));
    assert_eq!(index.revision("1"), Some(3));
    // The freed slot is reused by the next product.
    assert!(index.upsert("2", 1, "Kettle", "", "w"));
    assert_eq!(index.search("KETTLE", 0, 10).values, ["w"]);
    assert_eq!(index.len(), 1);
}

#[test]
fn large_result_sets_page_through_the_global_order() {
    let mut index = SearchIndex::new();
    let n = super::SORT_LIMIT * 2 + 7;
    for i in (0..n).rev() {
        index.upsert(&format!("{i:06}"), 1, &format!("item {i:06}"), "", i);
    }
    let hits = index.search("ITEM", 3, 4);
    assert_eq!(hits.total, n);
    assert_eq!(hits.values, [3, 4, 5, 6]);
    let last = index.search("item", n - 2, 100);
    assert_eq!(last.values, [n - 2, n - 1]);
}

fn product() -> impl Strategy<Value = (String, String)> {
    // Few letters, their other cases and simple-folding orbits, regex
    // metacharacters: random queries then often match.
    let text = "[abAB .*()\\[\\]+?|^$\\\\ſsSσςΣßẞkK\u{212A}éÉ]{0,12}";
    (text, text)
}

proptest! {
    /// Against the obvious answer: a case-insensitive regex of the escaped
    /// query over each field, every product checked, sorted by name and id.
    #[test]
    fn answers_as_a_case_insensitive_literal_scan(
        products in proptest::collection::vec(product(), 0..40),
        deleted in proptest::collection::vec(any::<bool>(), 40),
        query in "[abAB .*()\\[\\]+?|^$\\\\ſsSσςΣßẞkK\u{212A}éÉ]{0,4}",
        offset in 0usize..8,
        limit in 1usize..8,
    ) {
        let mut index = SearchIndex::new();
        let mut expected = Vec::new();
        for (i, (name, description)) in products.iter().enumerate() {
            let id = format!("{i:03}");
            index.upsert(&id, 1, name, description, id.clone());
            if deleted[i] {
                index.remove(&id, 2);
            } else {
                expected.push((name.clone(), id, description.clone()));
            }
        }
        let pattern = regex::RegexBuilder::new(&regex::escape(&query))
            .case_insensitive(true)
            .build()
            .unwrap();
        expected.retain(|(name, _, description)| pattern.is_match(name) || pattern.is_match(description));
        expected.sort();
        let hits = index.search(&query, offset, limit);
        prop_assert_eq!(hits.total, expected.len());
        let page: Vec<String> = expected.into_iter().skip(offset).take(limit).map(|(_, id, _)| id).collect();
        prop_assert_eq!(hits.values, page);
    }
}
