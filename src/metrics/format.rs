//! The two text formats `/metrics` speaks. prometheus-client encodes OpenMetrics
//! (`# TYPE x counter` above `x_total`, `# EOF`); a scraper that does not ask for
//! OpenMetrics gets the classic Prometheus text format (0.0.4), in which a counter's
//! family is named as its samples are and there is no `# EOF`.

/// The content type of each format.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether an `Accept` header asks for OpenMetrics.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// OpenMetrics text as the classic text format.
pub fn classic(openmetrics: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some((name, "counter")) = rest.split_once(' ') {
                counters.insert(name.to_string());
            }
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((p, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let name = match counters.contains(name) {
                    true => format!("{name}_total"),
                    false => name.to_string(),
                };
                let tail = match (p, tail) {
                    ("# TYPE ", "unknown") => "untyped",
                    _ => tail,
                };
                out.push_str(&format!("{p}{name} {tail}\n"));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_as_their_samples_and_eof_goes() {
        let om = "# HELP s3lun_reads Reads.\n# TYPE s3lun_reads counter\ns3lun_reads_total 3\n\
                  # HELP s3lun_luns LUNs.\n# TYPE s3lun_luns gauge\ns3lun_luns 2\n\
                  # TYPE s3lun_x unknown\ns3lun_x 1\n# EOF\n";
        assert_eq!(
            classic(om),
            "# HELP s3lun_reads_total Reads.\n# TYPE s3lun_reads_total counter\ns3lun_reads_total 3\n\
             # HELP s3lun_luns LUNs.\n# TYPE s3lun_luns gauge\ns3lun_luns 2\n\
             # TYPE s3lun_x untyped\ns3lun_x 1\n"
        );
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
        )));
        assert!(!wants_openmetrics(Some("text/plain")));
        assert!(!wants_openmetrics(None));
    }
}
