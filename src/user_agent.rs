//! The requesting PC's browser in words a person checks at a glance on the confirm screen
//! ("Chrome 131 · Windows"), so every mini-program shows the same thing. Only the common
//! browsers and systems are named; anything else is "Unknown browser".

/// `"{browser} {major version} · {system}"`, or as much of it as the user agent tells.
pub fn describe(user_agent: &str) -> String {
    let browser = browser(user_agent);
    match (browser, system(user_agent)) {
        (Some(b), Some(s)) => format!("{b} · {s}"),
        (Some(b), None) => b,
        (None, Some(s)) => format!("Unknown browser · {s}"),
        (None, None) => "Unknown browser".to_owned(),
    }
}

/// The major version after `marker` (`"Chrome/131.0.0.0"` → `131`).
fn major(user_agent: &str, marker: &str) -> Option<String> {
    let rest = &user_agent[user_agent.find(marker)? + marker.len()..];
    let version: String = rest.chars().take_while(char::is_ascii_digit).collect();
    (!version.is_empty()).then_some(version)
}

fn browser(ua: &str) -> Option<String> {
    // Order matters: Edge and Opera also say Chrome; Chrome also says Safari.
    const KNOWN: [(&str, &str); 7] = [
        ("Edg/", "Edge"),
        ("OPR/", "Opera"),
        ("QQBrowser/", "QQ Browser"),
        ("Firefox/", "Firefox"),
        ("CriOS/", "Chrome"),
        ("Chrome/", "Chrome"),
        ("Version/", "Safari"),
    ];
    KNOWN.iter().find_map(|(marker, name)| {
        let safari_only = *marker == "Version/" && !ua.contains("Safari/");
        if safari_only {
            return None;
        }
        major(ua, marker).map(|v| format!("{name} {v}"))
    })
}

fn system(ua: &str) -> Option<&'static str> {
    const KNOWN: [(&str, &str); 7] = [
        ("Windows", "Windows"),
        ("iPhone", "iOS"),
        ("iPad", "iPadOS"),
        ("Mac OS X", "macOS"),
        ("CrOS", "ChromeOS"),
        ("Android", "Android"),
        ("Linux", "Linux"),
    ];
    KNOWN
        .iter()
        .find(|(marker, _)| ua.contains(marker))
        .map(|(_, name)| *name)
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[test]
    fn common_browsers_read_as_words() {
        let cases = [
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
                "Chrome 131 · Windows",
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.2903.86",
                "Edge 131 · Windows",
            ),
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Safari/605.1.15",
                "Safari 17 · macOS",
            ),
            (
                "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
                "Firefox 133 · Linux",
            ),
            (
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/156.0.0.0 Safari/537.36",
                "Chrome 156 · Linux",
            ),
            ("curl/7.88.1", "Unknown browser"),
            ("", "Unknown browser"),
        ];
        for (ua, expected) in cases {
            assert_eq!(describe(ua), expected, "{ua}");
        }
    }
}
