//! The printable HTML page of an invoice: self-contained (inline style, no script, no
//! external resource), every text from the database escaped, amounts formatted for the
//! market's locale.

use std::fmt::Write as _;

use super::model::Invoice;
use crate::babel::money;

/// `s` with the five HTML metacharacters escaped.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page of `invoice`, amounts formatted for `locale` (BCP 47).
pub(crate) fn html(invoice: &Invoice, locale: &str) -> String {
    let lang: unic_langid::LanguageIdentifier = locale
        .parse()
        .unwrap_or_else(|_| unic_langid::LanguageIdentifier::default());
    let fmt = |minor: i64| match money::currency("currency", &invoice.currency) {
        Ok(c) => escape(&money::format(minor, c, &lang)),
        Err(_) => format!("{minor} {}", escape(&invoice.currency)),
    };
    let mut rows = String::new();
    for l in &invoice.lines {
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{}</td><td class=n>{}</td><td class=n>{}</td>\
             <td class=n>{}</td><td class=n>{}</td></tr>",
            escape(&l.sku),
            escape(&l.name),
            l.quantity,
            fmt(l.unit_net),
            fmt(l.tax_amount),
            fmt(l.total_amount),
        );
    }
    let number = escape(&invoice.number);
    format!(
        "<!doctype html>\n<html lang=\"{lang}\"><head><meta charset=\"utf-8\">\
         <title>Invoice {number}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;\
         width:100%}}td,th{{border-bottom:1px solid #ccc;padding:.3em;text-align:left}}\
         .n{{text-align:right}}@media print{{body{{margin:0}}}}</style></head><body>\
         <h1>Invoice {number}</h1>\
         <p>Order <code>{order}</code> &middot; customer <code>{user}</code> &middot; \
         {country} ({market}) &middot; issued {issued}</p>\
         <table><thead><tr><th>SKU</th><th>Item</th><th class=n>Qty</th>\
         <th class=n>Unit (net)</th><th class=n>Tax</th><th class=n>Total</th></tr></thead>\
         <tbody>{rows}</tbody></table>\
         <p class=n>Net {net}<br>Tax {tax}<br><strong>Total {total}</strong></p>\
         </body></html>\n",
        lang = escape(locale),
        order = escape(&invoice.order_id),
        user = escape(&invoice.user_id),
        country = escape(&invoice.country),
        market = escape(&invoice.market),
        issued = escape(&invoice.issued_at),
        net = fmt(invoice.net_amount),
        tax = fmt(invoice.tax_amount),
        total = fmt(invoice.total_amount),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything() {
        assert_eq!(
            escape("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
    }
}
