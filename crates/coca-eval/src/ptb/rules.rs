//! The rule table of the PTB lexer: named sub-expressions and the ordered token rules.
//!
//! The table restates, in Rust `regex` syntax, the token classes of Stanford CoreNLP 3.4.1's `PTBLexer`
//! (the version pycocoevalcap runs) in the option set `PTBTokenizer -preserveLines` selects (its defaults:
//! LaTeX quotes, PTB3 ellipsis and dashes, bracket escaping, currency/fraction normalisation, assimilations
//! split, no Americanisation, no slash/asterisk escaping, "traditional" rather than strict Treebank 3).
//!
//! Two properties of that lexer shape how the patterns are written here:
//! * It is declared case-insensitive, which in its lexer generator applies to literal characters and
//!   strings but **not** to character classes. Literal words are therefore wrapped in `(?i:…)`, while
//!   classes such as `[A]` or `[A-Z]` stay case-sensitive.
//! * Rules are chosen by longest match (trailing context counted), ties going to the earlier rule; the
//!   order of [`rules`] is the lexer's order.

use std::collections::HashMap;

/// What the lexer does with the text a rule matched (after any trailing context is cut off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// The matched text is the token.
    Keep,
    /// The matched text is the token, with soft hyphens (U+00AD) removed.
    SoftHyphens,
    /// A fixed token replaces the matched text.
    Replace(&'static str),
    /// The first `len - n` characters are the token; the last `n` are lexed again.
    PushBack(usize),
    /// Quote characters mapped to LaTeX quotes; `true` when the quote probably opens.
    Quote(bool),
    /// Any ellipsis becomes `...`.
    Ellipsis,
    /// Vulgar fraction characters become `1/2` and the like.
    Fraction,
    /// Cent, pound and euro-like signs become `cents`, `#`, `$`.
    Currency,
    /// `&amp;` becomes `&`.
    Amp,
    /// Spaces become no-break spaces (so a token never holds an ASCII space).
    NoBreakSpace,
    /// Spaces become no-break spaces and parentheses become `-LRB-`/`-RRB-`.
    NoBreakSpaceParens,
    /// Parentheses inside the token become `-LRB-`/`-RRB-`.
    Parens,
    /// An abbreviation that may end a sentence: the token keeps its period, and the period is
    /// lexed again as a token of its own.
    PeriodTwice,
    /// An acronym before a word that usually starts a sentence: a one-letter acronym ("I.")
    /// gives the letter and then the period; a longer one behaves like [`Action::PeriodTwice`].
    AcronymBeforeSentence,
    /// Runs of hyphens: three or four become `--`, others stay as they are.
    Hyphens,
    /// Whitespace between tokens.
    Skip,
    /// A line break: ends the current line of tokens.
    Newline,
    /// A character no rule covers: dropped, as the lexer's default `untokenizable` option does.
    Drop,
}

/// One lexer rule: a pattern, optional trailing context (matched but not consumed), an action.
pub(crate) struct RuleSpec {
    /// The token pattern, with `«NAME»` references to [`definitions`].
    pub pattern: &'static str,
    /// Trailing context that must follow the token; it counts towards the match length.
    pub trailing: Option<&'static str>,
    /// What to do with the match.
    pub action: Action,
}

/// Named sub-expressions, referenced as `«NAME»` in patterns and in other definitions.
pub(crate) fn definitions() -> HashMap<&'static str, &'static str> {
    let defs: &[(&str, &str)] = &[
        (
            "SGML",
            r#"<(?:[!?][A-Za-z\-][^>\r\n]*|[A-Za-z][A-Za-z0-9_:.\-]*(?:[ ]+(?:[A-Za-z][A-Za-z0-9_:.\-]*|[A-Za-z][A-Za-z0-9_:.\-]*[ ]*=[ ]*(?:'[^']*'|"[^"]*")))*[ ]*/?|/[A-Za-z][A-Za-z0-9_:.\-]*)[ ]*>"#,
        ),
        (
            "SPMDASH",
            r"&(?i:md|mdash|ndash);|[\x{0096}\x{0097}\x{2013}\x{2014}\x{2015}]",
        ),
        ("SPAMP", r"&(?i:amp);"),
        ("SPPUNC", r"&(?:(?i:ht|tl|ur|lr|qc|ql|qr|odq|cdq)|#[0-9]+);"),
        ("SPLET", r"&[aeiouAEIOU](?i:acute|grave|uml);"),
        ("SPACE", r"[ \t\x{00A0}\x{2000}-\x{200A}\x{3000}]"),
        ("SPACES", r"«SPACE»+"),
        (
            "NEWLINE",
            r"\r\n|\r|\n|\x{2028}|\x{2029}|\x{000B}|\x{000C}|\x{0085}",
        ),
        ("SPACENL", r"«SPACE»|«NEWLINE»"),
        ("SPACENLS", r"«SPACENL»+"),
        ("SENTEND", r"«SPACENL»(?:«SPACENL»|\p{Lu}|«SGML»)"),
        ("DIGIT", r"[\p{Nd}\x{07C0}-\x{07C9}]"),
        ("DATE", r"«DIGIT»{1,2}[\-/]«DIGIT»{1,2}[\-/]«DIGIT»{2,4}"),
        (
            "NUM",
            r"«DIGIT»+|«DIGIT»*(?:[.:,\x{00AD}\x{066B}\x{066C}]«DIGIT»+)+",
        ),
        ("NUMBER", r"[\-+]?(?:«NUM»)"),
        (
            "SUBSUPNUM",
            r"[\x{207A}\x{207B}\x{208A}\x{208B}]?(?:[\x{2070}\x{00B9}\x{00B2}\x{00B3}\x{2074}-\x{2079}]+|[\x{2080}-\x{2089}]+)",
        ),
        (
            "FRAC",
            r"(?:«DIGIT»{1,4}[\- \x{00A0}])?«DIGIT»{1,4}(?:\\?/|\x{2044})«DIGIT»{1,4}",
        ),
        ("FRAC2", r"[\x{00BC}\x{00BD}\x{00BE}\x{2153}-\x{215E}]"),
        ("DOLSIGN", r"[A-Z]*\$|#"),
        (
            "DOLSIGN2",
            r"[\x{00A2}\x{00A3}\x{00A4}\x{00A5}\x{0080}\x{20A0}\x{20AC}\x{060B}\x{0E3F}\x{20A4}\x{FFE0}\x{FFE1}\x{FFE5}\x{FFE6}]",
        ),
        (
            "LETTER",
            concat!(
                r"\p{L}|«SPLET»|",
                r"[\x{00AD}\x{0237}-\x{024F}\x{02C2}-\x{02C5}\x{02D2}-\x{02DF}\x{02E5}-\x{02FF}\x{0300}-\x{036F}",
                r"\x{0370}-\x{037D}\x{0384}\x{0385}\x{03CF}\x{03F6}\x{03FC}-\x{03FF}\x{0483}-\x{0487}\x{04CF}",
                r"\x{04F6}-\x{04FF}\x{0510}-\x{0525}\x{055A}-\x{055F}\x{0591}-\x{05BD}\x{05BF}\x{05C1}\x{05C2}",
                r"\x{05C4}\x{05C5}\x{05C7}\x{0615}-\x{061A}\x{063B}-\x{063F}\x{064B}-\x{065E}\x{0670}",
                r"\x{06D6}-\x{06EF}\x{06FA}-\x{06FF}\x{070F}\x{0711}\x{0730}-\x{074F}\x{0750}-\x{077F}",
                r"\x{07A6}-\x{07B1}\x{07CA}-\x{07F5}\x{07FA}\x{0900}-\x{0903}\x{093C}\x{093E}-\x{094E}",
                r"\x{0951}-\x{0955}\x{0962}-\x{0963}\x{0981}-\x{0983}\x{09BC}-\x{09C4}\x{09C7}\x{09C8}",
                r"\x{09CB}-\x{09CD}\x{09D7}\x{09E2}\x{09E3}\x{0A01}-\x{0A03}\x{0A3C}\x{0A3E}-\x{0A4F}",
                r"\x{0A81}-\x{0A83}\x{0ABC}-\x{0ACF}\x{0B82}\x{0BBE}-\x{0BC2}\x{0BC6}-\x{0BC8}\x{0BCA}-\x{0BCD}",
                r"\x{0C01}-\x{0C03}\x{0C3E}-\x{0C56}\x{0D3E}-\x{0D44}\x{0D46}-\x{0D48}\x{0E30}-\x{0E3A}",
                r"\x{0E47}-\x{0E4E}\x{0EB1}-\x{0EBC}\x{0EC8}-\x{0ECD}]"
            ),
        ),
        (
            "WORD",
            r"(?:«LETTER»)(?:«LETTER»|«DIGIT»)*(?:[.!?](?:«LETTER»)(?:«LETTER»|«DIGIT»)*)*",
        ),
        (
            "FILENAME_EXT",
            r"(?i:bat|bmp|c|class|cgi|cpp|dll|doc|docx|exe|gif|gz|h|htm|html|jar|java|jpeg|jpg|mov|mp3|pdf|php|pl|png|ppt|ps|py|sql|tar|txt|wav|x|xml|zip)",
        ),
        (
            "FILENAME",
            r"(?:«LETTER»|«DIGIT»)+(?:[.](?:«LETTER»|«DIGIT»)+)*(?:[.]«FILENAME_EXT»)",
        ),
        ("LD", r"[\p{L}\p{Nd}]"),
        (
            "THING",
            r"(?:[dDoOlL]«APOSETCETERA»«LD»)?«LD»+(?:«HYPHEN»(?:[dDoOlL]«APOSETCETERA»«LD»)?«LD»+)*",
        ),
        ("THINGA", r"[A-Z]+(?:(?:[+&]|«SPAMP»)[A-Z]+)+"),
        (
            "THING3",
            r"[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}(?:\\?/[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}){1,2}",
        ),
        ("APOS", r"['\x{0092}\x{2019}]|&(?i:apos);"),
        ("APOSETCETERA", r"«APOS»|[`\x{0091}\x{2018}\x{201B}]"),
        (
            "HTHING",
            r"[A-Za-z0-9][A-Za-z0-9.,\x{00AD}]*(?:-(?:[A-Za-z0-9\x{00AD}]+|«ACRO2»\.))+",
        ),
        ("REDAUX", r"«APOS»(?:[msdMSD]|(?i:re|ve|ll))"),
        ("SWORD", r"[A-Za-z\x{00AD}]*[A-MO-Za-mo-z]\x{00AD}*"),
        ("SREDAUX", r"(?i:n)«APOSETCETERA»(?i:t)"),
        (
            "APOWORD",
            concat!(
                r"«APOS»(?i:n)(?:«APOS»)?|[lLdDjJ]«APOS»|(?i:dunkin)«APOS»|(?i:somethin)«APOS»|(?i:ol)«APOS»",
                r"|«APOS»(?i:em)|[A-HJ-XZn]«APOSETCETERA»\p{L}{2}\p{L}*|«APOS»[2-9](?i:0s)|«APOS»(?i:til)(?i:l)?",
                r"|\p{L}\p{L}*[aeiouyAEIOUY]«APOSETCETERA»[aeiouA-Z]\p{L}*|«APOS»(?i:cause)|(?i:cont'd)\.?",
                r"|(?i:'twas|nor'easter|c'mon|e'er|s'mores|ev'ry|li'l|nat'l)|(?i:o)«APOSETCETERA»(?i:o)"
            ),
        ),
        ("APOWORD2", r"(?i:y)«APOS»"),
        (
            "FULLURL",
            r#"(?i:https?://)[^ \t\n\x0C\r"<>|(){}]+[^ \t\n\x0C\r"<>|.!?(){},\-]"#,
        ),
        (
            "LIKELYURL",
            r#"(?:(?:(?i:www)\.(?:[^ \t\n\x0C\r"<>|.!?(){},]+\.)+[a-zA-Z]{2,4})|(?:(?:[^ \t\n\x0C\r"`'<>|.!?(){},-_$]+\.)+(?i:com|net|org|edu)))(?:/[^ \t\n\x0C\r"<>|()]+[^ \t\n\x0C\r"<>|.!?(){},\-])?"#,
        ),
        (
            "EMAIL",
            r#"(?:&(?i:lt);|<)?[a-zA-Z0-9][^ \t\n\x0C\r"<>|()\x{00A0}{}]*@(?:[^ \t\n\x0C\r"<>|(){}.\x{00A0}]+\.)*(?:[^ \t\n\x0C\r"<>|(){}.\x{00A0}]+)(?:&(?i:gt);|>)?"#,
        ),
        ("TWITTER", r"@[a-zA-Z_][a-zA-Z_0-9]*|#(?:«LETTER»)+"),
        (
            "ABMONTH",
            r"(?i:jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec)",
        ),
        ("ABDAYS", r"(?i:mon|tue|tues|wed|thu|thurs|fri)"),
        (
            "ABSTATE",
            r"(?i:ala|ariz)|A(?i:z)|A(?i:rk)|(?i:calif|colo|conn|ct|dak)|D(?i:el)|(?i:fla|ga)|I(?i:ll)|(?i:ind|kans?|ky)|L(?i:a)|M(?i:ass)|(?i:md|mich|minn)|M(?i:iss)|(?i:mo|mont|neb|nev|okla)|O(?i:re)|P(?i:a)|(?i:penn|tenn)|T(?i:ex)|(?i:va|vt)|W(?i:ash)|(?i:wisc?|wyo)",
        ),
        (
            "ABCOMP",
            r"(?i:inc|cos?|corp|pp?t[ye]s?|ltd|plc|rt|bancorp|bhd|assn|univ|intl|sys)",
        ),
        ("ABNUM", r"(?i:tel|est|ext|sq)"),
        ("ABPTIT", r"(?i:jr|sr|bros|(?:ed|ph)\.d|blvd|rd|esq)"),
        (
            "ABBREV1",
            r"(?:«ABMONTH»|«ABDAYS»|«ABSTATE»|«ABCOMP»|«ABNUM»|«ABPTIT»|(?i:etc|al|seq|bldg))\.",
        ),
        (
            "ACRO",
            r"[A-Za-z](?:\.[A-Za-z])*|(?i:canada|sino|korean|eu|japan|non)-(?i:u\.s)|(?i:u\.s\.-)(?i:u\.k|u\.s\.s\.r)",
        ),
        (
            "ACRO2",
            r"[A-Za-z](?:\.[A-Za-z])+|(?i:canada|sino|korean|eu|japan|non)-(?i:u\.s)|(?i:u\.s\.-)(?i:u\.k|u\.s\.s\.r)",
        ),
        (
            "ABTITLE",
            r"(?i:mr|mrs|ms)|M(?i:iss)|(?i:drs?|profs?|sens?|reps?|attys?|lt|col|gen|messrs|govs?|adm|rev|maj|sgt|cpl|pvt|capt|ste?|ave|pres|lieut|hon|brig|co?mdr|pfc|spc|supts?|det|mt|ft|adj|adv|asst|assoc|ens|insp|mlle|mme|msgr|sfc)",
        ),
        ("ABCOMP2", r"(?i:invt|elec|natl|m[ft]g|dept)"),
        (
            "ABBREV4",
            r"«ABTITLE»|(?i:vs|alex|wm|jos|cie|a\.k\.a|cf|treas|ph)|«ACRO»|«ABCOMP2»",
        ),
        ("ABBREV2", r"(?:«ABBREV4»)\."),
        ("ACRONYM", r"(?:«ACRO»)\."),
        ("ABBREV3", r"(?i:ca|figs?|prop|nos?|art|bldg|prop|pp|op)\."),
        (
            "PHONE",
            r"(?:\([0-9]{2,3}\)[ \x{00A0}]?|(?:\+\+?)?(?:[0-9]{2,4}[\- \x{00A0}])?[0-9]{2,4}[\- \x{00A0}])[0-9]{3,4}[\- \x{00A0}]?[0-9]{3,5}|(?:(?:\+\+?)?[0-9]{2,4}\.)?[0-9]{2,4}\.[0-9]{3,4}\.[0-9]{3,5}",
        ),
        ("HYPHEN", r"[\-_\x{058A}\x{2010}\x{2011}]"),
        (
            "LDOTS",
            r"\.{3,5}|(?:\.[ \x{00A0}]){2,4}\.|[\x{0085}\x{2026}]",
        ),
        (
            "QUOTES",
            r"«APOS»|''|[`\x{2018}\x{2019}\x{201A}\x{201B}\x{201C}\x{201D}\x{0091}\x{0092}\x{0093}\x{0094}\x{201E}\x{201F}\x{2039}\x{203A}\x{00AB}\x{00BB}]{1,2}",
        ),
        ("DBLQUOT", r#""|&(?i:quot);"#),
        (
            "TBSPEC",
            r"-(?i:rrb|lrb|rcb|lcb|rsb|lsb)-|(?i:c\.d\.s|pro-|anti-)|(?i:s)(?:&|«SPAMP»)(?i:p-500)|(?i:s)(?:&|«SPAMP»)(?i:ls)|(?i:cap)«APOS»(?i:n)|(?i:c)«APOS»(?i:est)",
        ),
        ("SMILEY", r"[<>]?[:;=][\-o*']?[()DPdpO\\{@|\[\]]"),
        (
            "ASIANSMILEY",
            r"[\^x=~<>]\.\[\^x=~<>\]|[\-\^x=~<>']_[\-\^x=~<>']|\([\-\^x=~<>'][_.]?[\-\^x=~<>']\)|\([\^x=~<>']-[\^x=~<>'`]\)",
        ),
        (
            "MISCSYMBOL",
            concat!(
                r"[+%&\~\^|\\\x{00A6}\x{00A7}\x{00A8}\x{00A9}\x{00AC}\x{00AE}\x{00AF}\x{00B0}-\x{00BA}\x{00D7}\x{00F7}",
                r"\x{0387}\x{05BE}\x{05C0}\x{05C3}\x{05C6}\x{05F3}\x{05F4}\x{0600}-\x{0603}\x{0606}-\x{060A}\x{060C}",
                r"\x{0614}\x{061B}\x{061E}\x{066A}\x{066D}\x{0703}-\x{070D}\x{07F6}\x{07F7}\x{07F8}\x{0964}\x{0965}",
                r"\x{0E4F}\x{1FBD}\x{2016}\x{2017}\x{2020}-\x{2023}\x{2030}-\x{2038}\x{203B}\x{203E}-\x{2042}\x{2044}",
                r"\x{207A}-\x{207F}\x{208A}-\x{208E}\x{2100}-\x{214F}\x{2190}-\x{21FF}\x{2200}-\x{2BFF}\x{3012}\x{30FB}",
                r"\x{FF01}-\x{FF0F}\x{FF1A}-\x{FF20}\x{FF3B}-\x{FF40}\x{FF5B}-\x{FF65}]"
            ),
        ),
        ("INSENTP", r"[,;:\x{3001}]"),
    ];
    defs.iter().copied().collect()
}

/// Words after which an acronym's period is taken to end a sentence (case-sensitive first letter).
const SENTENCE_STARTERS: &str = concat!(
    r"A(?i:bout)|A(?i:ccording)|A(?i:dditionally)|A(?i:fter)|A(?i:n)|A|A(?i:s)|A(?i:t)|B(?i:ut)",
    r"|E(?i:arlier)|H(?i:e)|H(?i:er)|H(?i:ere)|H(?i:owever)|I(?i:f)|I(?i:n)|I(?i:t)|L(?i:ast)|M(?i:any)",
    r"|M(?i:ore)|M(?i:r)\.|M(?i:s)\.|N(?i:ow)|O(?i:nce)|O(?i:ne)|O(?i:ther)|O(?i:ur)|S(?i:he)|S(?i:ince)",
    r"|S(?i:o)|S(?i:ome)|S(?i:uch)|T(?i:hat)|T(?i:he)|T(?i:heir)|T(?i:hen)|T(?i:here)|T(?i:hese)",
    r"|T(?i:hey)|T(?i:his)|W(?i:e)|W(?i:hen)|W(?i:hile)|W(?i:hat)|Y(?i:et)|Y(?i:ou)|«SGML»"
);

/// The token rules, in the lexer's priority order.
pub(crate) fn rules() -> Vec<RuleSpec> {
    use Action::*;
    let rule = |pattern, trailing, action| RuleSpec {
        pattern,
        trailing,
        action,
    };
    vec![
        rule(r"(?i:c)[+][+]", None, Keep),
        rule(r"(?i:c|f)#", None, Keep),
        rule(r"(?i:cannot)", None, PushBack(3)),
        rule(r"(?i:'twas)", None, PushBack(3)),
        rule(r"(?i:'tis)", None, PushBack(2)),
        rule(r"(?i:gonna|gotta|lemme|gimme|wanna)", None, PushBack(2)),
        rule(r"«SGML»", None, NoBreakSpace),
        rule(r"«SPMDASH»", None, Replace("--")),
        rule(r"«SPAMP»", None, Amp),
        rule(r"«SPPUNC»", None, Keep),
        rule(r"«WORD»", Some(r"«REDAUX»"), SoftHyphens),
        rule(r"«SWORD»", Some(r"«SREDAUX»"), SoftHyphens),
        rule(r"«WORD»", None, SoftHyphens),
        rule(r"«APOWORD»", None, Keep),
        rule(r"«APOWORD2»", Some(r"\p{L}"), Keep),
        rule(r"«FULLURL»", None, Keep),
        rule(r"«LIKELYURL»", None, Keep),
        rule(r"«EMAIL»", None, Keep),
        rule(r"«TWITTER»", None, Keep),
        rule(r"«REDAUX»", Some(r"[^A-Za-z]"), Quote(false)),
        rule(r"«SREDAUX»", Some(r"[^A-Za-z]"), Quote(false)),
        rule(r"«DATE»", None, Keep),
        rule(r"«NUMBER»", None, SoftHyphens),
        rule(r"«SUBSUPNUM»", None, Keep),
        rule(r"«FRAC»", None, NoBreakSpace),
        rule(r"«FRAC2»", None, Fraction),
        rule(r"«TBSPEC»", None, Amp),
        rule(r"«THING3»", None, Keep),
        rule(r"«DOLSIGN»", None, Keep),
        rule(r"«DOLSIGN2»", None, Currency),
        rule(
            r"«ACRONYM»",
            Some(concat!(r"(?:«SPACENLS»)(?:", "\u{1}", r")(?:«SPACENL»)")),
            AcronymBeforeSentence,
        ),
        rule(r"«ABBREV3»", Some(r"(?:«SPACENL»)?\p{Nd}"), Keep),
        rule(r"(?i:pt[ey]|co)\.", Some(r"«SPACE»(?i:ltd|lim)"), Keep),
        rule(r"«ABBREV1»", Some(r"«SENTEND»"), PeriodTwice),
        rule(r"«ABBREV1»", Some(r"(?s:.)(?s:.)"), Keep),
        rule(r"«ABBREV1»", None, PeriodTwice),
        rule(r"«ABBREV2»", None, Keep),
        rule(r"«ABBREV4»", Some(r"«SPACE»"), Keep),
        rule(r"«ACRO»", Some(r"«SPACENL»"), Keep),
        rule(r"«APOS»[0-9][0-9]", Some(r"«SPACENL»"), Keep),
        rule(r"«FILENAME»", Some(r"«SPACENL»|[.?!,]"), Keep),
        rule(r"(?:«WORD»)\.", Some(r"«INSENTP»"), SoftHyphens),
        rule(r"«PHONE»", None, NoBreakSpaceParens),
        rule(r"«DBLQUOT»", Some(r"[A-Za-z0-9$]"), Quote(true)),
        rule(r"«DBLQUOT»", None, Quote(false)),
        rule(r"\x{007F}", None, Skip),
        rule(r"<|&(?i:lt);", None, Replace("<")),
        rule(r">|&(?i:gt);", None, Replace(">")),
        rule(r"«SMILEY»", Some(r"[^A-Za-z0-9]"), Parens),
        rule(r"«ASIANSMILEY»", None, Parens),
        rule(r"\{", None, Replace("-LCB-")),
        rule(r"\}", None, Replace("-RCB-")),
        rule(r"\[", None, Replace("-LSB-")),
        rule(r"\]", None, Replace("-RSB-")),
        rule(r"\(", None, Replace("-LRB-")),
        rule(r"\)", None, Replace("-RRB-")),
        rule(r"-+", None, Hyphens),
        rule(r"«LDOTS»", None, Ellipsis),
        rule(r"@+|#+|_+", None, Keep),
        rule(r"\*+|(?:\\\*){1,3}", None, Keep),
        rule(r"«INSENTP»", None, Keep),
        rule(r"[?!]+", None, Keep),
        rule(
            r"[.\x{00A1}\x{00BF}\x{037E}\x{0589}\x{061F}\x{06D4}\x{0700}-\x{0702}\x{07FA}\x{3002}]",
            None,
            Keep,
        ),
        rule(r"=", None, Keep),
        rule(r"/", None, Keep),
        rule(r"(?:«HTHING»)\.", Some(r"«INSENTP»"), SoftHyphens),
        rule(r"«HTHING»", None, SoftHyphens),
        rule(r"(?:«THING»)\.", Some(r"«INSENTP»"), Keep),
        rule(r"«THING»", None, Keep),
        rule(r"(?:«THINGA»)\.", Some(r"«INSENTP»"), Amp),
        rule(r"«THINGA»", None, Amp),
        rule(r"'", Some(r"[A-Za-z][^ \t\n\r\x{00A0}]"), Quote(true)),
        rule(r"«REDAUX»", None, Quote(false)),
        rule(r"«SREDAUX»", None, Quote(false)),
        rule(r"«QUOTES»", None, Quote(false)),
        rule(r"<<|>>", None, Keep),
        rule(r"«MISCSYMBOL»", None, Keep),
        rule(
            r"\x{0000}|«SPACES»|[\x{200B}\x{200E}-\x{200F}\x{FEFF}]",
            None,
            Skip,
        ),
        rule(r"«NEWLINE»", None, Newline),
        rule(r".", None, Drop),
    ]
}

/// Expands `«NAME»` references (recursively) into non-capturing groups.
///
/// The sentence-starter list is spliced in where a rule holds the placeholder `\u{1}`.
pub(crate) fn expand(pattern: &str, defs: &HashMap<&'static str, &'static str>) -> String {
    let pattern = pattern.replace('\u{1}', SENTENCE_STARTERS);
    let mut out = String::with_capacity(pattern.len());
    let mut rest = pattern.as_str();
    while let Some(start) = rest.find('«') {
        out.push_str(&rest[..start]);
        let after = &rest[start + '«'.len_utf8()..];
        let end = after
            .find('»')
            .expect("rule table: unterminated «NAME» reference");
        let name = &after[..end];
        let body = defs
            .get(name)
            .unwrap_or_else(|| panic!("rule table: unknown definition «{name}»"));
        out.push_str("(?:");
        out.push_str(&expand(body, defs));
        out.push(')');
        rest = &after[end + '»'.len_utf8()..];
    }
    out.push_str(rest);
    out
}
