//! The TraceQL that Grafana's Traces Drilldown app generates, parsed by our parser.
//!
//! Queries are copied from grafana/traces-drilldown at commit
//! 2edd9c93c8730e7e47475995e9e2976f8e8b0ac4 (`src/components/Explore/queries/*.ts`,
//! `src/pages/Explore/primary-signals.ts`, `Tabs/Structure/StructureScene.tsx`,
//! `src/utils/filters-renderer.test.ts`), with their template variables filled in as the app
//! fills them: `${primarySignal}` is `nestedSetParent<0` (root spans) or `kind=server`, and
//! `${filters}` the ad-hoc filters the user picked (`true` when none).

const QUERIES: &[&str] = &[
    // generateMetricsQuery.ts: rate, errors and duration panels, with and without breakdowns.
    r#"{nestedSetParent<0 && resource.service.name="orders"} | rate() "#,
    r#"{nestedSetParent<0 && resource.service.name="orders" && status=error} | rate() "#,
    r#"{kind=server && true && name="test"} | rate() "#,
    r#"{nestedSetParent<0 && true && resource.service.name != nil} | rate() by(resource.service.name)"#,
    r#"{nestedSetParent<0 && true && resource.service.name="foo"} | rate() by(resource.service.name)"#,
    r#"{nestedSetParent<0 && true} | quantile_over_time(duration, 0.9) by(resource.service.name) with(sample=true)"#,
    r#"{kind=server && true} | quantile_over_time(duration, 0.5, 0.9, 0.99)"#,
    // histogram.ts
    r#"{nestedSetParent<0 && true} | histogram_over_time(duration) with(sample=true)"#,
    // exceptions.ts
    r#"{nestedSetParent<0 && true && status = error} | select(resource.service.name, event.exception.message,event.exception.stacktrace,event.exception.type) with(most_recent=true)"#,
    // comparisonQuery.ts: the selection, and the compare() the comparison tab runs with it.
    r#"{duration >= 0ms && duration <= 2s}"#,
    r#"{nestedSetParent<0 && true} | compare({duration >= 0ms && duration <= 2s}, 10, 1728987791000000000, 1728988006000000000)"#,
    // StructureScene.tsx
    r#"({nestedSetParent<0 && resource.service.name="orders"} &>> { kind = server }) || ({nestedSetParent<0 && resource.service.name="orders"}) | select(status, resource.service.name, name, nestedSetParent, nestedSetLeft, nestedSetRight)"#,
    // filters-renderer.test.ts. (Its other fixture, `service.name="a"&&kind=server`, has an
    // unscoped key without the leading dot that the app never emits and Tempo rejects too.)
    r#"{status=error&&kind=client&&span:status=ok&&span:kind=server}"#,
    r#"{resource.service.name="a"&&kind=server}"#,
];

#[test]
fn every_query_drilldown_generates_parses_and_prints_back_to_the_same_query() {
    for text in QUERIES {
        let query = threadline_traceql::parse(text)
            .unwrap_or_else(|e| panic!("Drilldown's query {text:?} does not parse: {e}"));
        let printed = query.to_string();
        let reparsed = threadline_traceql::parse(&printed).unwrap_or_else(|e| {
            panic!("{text:?} printed as {printed:?}, which does not parse: {e}")
        });
        assert_eq!(
            reparsed.to_string(),
            printed,
            "{text:?} does not print back to the same query"
        );
    }
}

#[test]
fn drilldown_metrics_queries_are_metrics_queries_and_searches_are_not() {
    for text in QUERIES {
        let query = threadline_traceql::parse(text).expect("parsed in the test above");
        let is_metrics = text.contains("| rate()")
            || text.contains("_over_time(")
            || text.contains("| compare(");
        assert_eq!(query.is_metrics(), is_metrics, "{text:?}");
    }
}
