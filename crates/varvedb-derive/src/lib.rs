//! The derive macros of VarveDB, re-exported by `varvedb`: `#[derive(varvedb::Event)]` and
//! `#[derive(varvedb::Layout)]`. See `varvedb::Event` and `varvedb::Layout` for what they
//! mean; this crate only writes the impls.
#![deny(missing_docs)]

use proc_macro::TokenStream;
use proc_macro2::TokenStream as Tokens;
use quote::{quote, ToTokens};
use syn::{parse_macro_input, Attribute, Data, DeriveInput, Fields, Generics, LitStr, Meta};

/// Longest event type name the store accepts (`varvedb::MAX_EVENT_TYPE_LEN`).
const MAX_NAME_LEN: usize = 256;

/// Derives `varvedb::Event` (and `varvedb::Layout`) for a type that also derives rkyv's
/// `Archive`: `#[event(name = "...", version = N)]` sets the stored name (default: the type's
/// name) and the schema version (default: 1); `#[event(previous = Type)]` names the type of the
/// previous version, which the type implements `varvedb::Upcast` from, so that readers of it
/// read the events of that version and every one before it.
#[proc_macro_derive(Event, attributes(event))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match event(&input) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// Derives `varvedb::Layout` for a type that events contain: the fingerprint of its archived
/// layout, from its fields' names, order and types.
#[proc_macro_derive(Layout)]
pub fn derive_layout(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match layout(&input) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn event(input: &DeriveInput) -> syn::Result<Tokens> {
    let EventAttrs {
        name,
        version,
        previous,
    } = event_attrs(input)?;
    let ident = &input.ident;
    let name = match name {
        Some(name) => name,
        None if input.generics.type_params().next().is_some() => {
            return Err(syn::Error::new_spanned(
                ident,
                "a generic event type needs a name of its own for each use: set it with \
                 #[event(name = \"...\")] on a non-generic wrapper",
            ));
        }
        None => LitStr::new(&ident.to_string(), ident.span()),
    };
    let value = name.value();
    if value.is_empty() || value.len() > MAX_NAME_LEN {
        return Err(syn::Error::new_spanned(
            &name,
            format!("an event name has 1 to {MAX_NAME_LEN} bytes"),
        ));
    }
    let layout = layout(input)?;
    let upcasts = previous.map(|previous| {
        quote! {
            fn upcasts() -> ::std::vec::Vec<::varvedb::Upcaster<Self>> {
                ::varvedb::Upcaster::<Self>::chain::<#previous>()
            }
        }
    });
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    Ok(quote! {
        #layout
        impl #impl_generics ::varvedb::Event for #ident #ty_generics #where_clause {
            const NAME: &'static str = #name;
            const VERSION: u16 = #version;
            #upcasts
        }
    })
}

/// What the `#[event(...)]` attributes say.
struct EventAttrs {
    name: Option<LitStr>,
    version: u16,
    previous: Option<syn::Type>,
}

fn event_attrs(input: &DeriveInput) -> syn::Result<EventAttrs> {
    let mut name = None;
    let mut version = 1u16;
    let mut previous = None;
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("event")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("name") {
                name = Some(meta.value()?.parse::<LitStr>()?);
                Ok(())
            } else if meta.path.is_ident("version") {
                let lit: syn::LitInt = meta.value()?.parse()?;
                version = lit.base10_parse()?;
                Ok(())
            } else if meta.path.is_ident("previous") {
                previous = Some(meta.value()?.parse::<syn::Type>()?);
                Ok(())
            } else {
                Err(meta.error(
                    "expected `name = \"...\"`, `version = N` or `previous = TypeOfThePreviousVersion`",
                ))
            }
        })?;
    }
    Ok(EventAttrs {
        name,
        version,
        previous,
    })
}

fn layout(input: &DeriveInput) -> syn::Result<Tokens> {
    let ident = &input.ident;
    let container = rkyv_attrs(&input.attrs);
    let body = match &input.data {
        Data::Struct(s) => {
            let fields = fields(&s.fields);
            quote! {
                ::varvedb::LayoutHasher::new("struct")
                    .str(#container)
                    #fields
                    .finish()
            }
        }
        Data::Enum(e) => {
            let count = e.variants.len() as u64;
            let variants = e.variants.iter().map(|v| {
                let name = v.ident.to_string();
                let attrs = rkyv_attrs(&v.attrs);
                let fields = fields(&v.fields);
                quote! { .str(#name).str(#attrs) #fields }
            });
            quote! {
                ::varvedb::LayoutHasher::new("enum")
                    .str(#container)
                    .count(#count)
                    #(#variants)*
                    .finish()
            }
        }
        Data::Union(u) => {
            return Err(syn::Error::new_spanned(
                u.union_token,
                "unions have no layout fingerprint",
            ))
        }
    };
    let generics = with_layout_bounds(&input.generics);
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();
    Ok(quote! {
        impl #impl_generics ::varvedb::Layout for #ident #ty_generics #where_clause {
            const LAYOUT: ::varvedb::Fingerprint = #body;
        }
    })
}

/// The hasher calls for a list of fields: their shape (named, tuple, unit) and count, then each
/// field's name, rkyv attributes and type's fingerprint.
fn fields(fields: &Fields) -> Tokens {
    let (shape, count) = match fields {
        Fields::Named(f) => ("named", f.named.len()),
        Fields::Unnamed(f) => ("tuple", f.unnamed.len()),
        Fields::Unit => ("unit", 0),
    };
    let count = count as u64;
    let each = fields.iter().enumerate().map(|(i, f)| {
        let name = f
            .ident
            .as_ref()
            .map_or_else(|| i.to_string(), ToString::to_string);
        let attrs = rkyv_attrs(&f.attrs);
        let ty = &f.ty;
        quote! {
            .str(#name)
            .str(#attrs)
            .layout(<#ty as ::varvedb::Layout>::LAYOUT)
        }
    });
    quote! { .str(#shape).count(#count) #(#each)* }
}

/// `T: varvedb::Layout` for every type parameter.
fn with_layout_bounds(generics: &Generics) -> Generics {
    let mut generics = generics.clone();
    let params: Vec<_> = generics.type_params().map(|p| p.ident.clone()).collect();
    let clause = generics.make_where_clause();
    for p in params {
        clause
            .predicates
            .push(syn::parse_quote!(#p: ::varvedb::Layout));
    }
    generics
}

/// The items of `#[rkyv(...)]` attributes that change how a value is archived, as text (`with =
/// ...`, `as = ...`, `remote = ...` and any item not known to leave the bytes alone), in order.
/// Items that only name generated types or add derives and bounds to them are left out, so that
/// adding `#[rkyv(derive(Debug))]` does not change a fingerprint.
fn rkyv_attrs(attrs: &[Attribute]) -> String {
    const NEUTRAL: &[&str] = &[
        "derive",
        "compare",
        "archived",
        "resolver",
        "crate",
        "omit_bounds",
        "archive_bounds",
        "serialize_bounds",
        "deserialize_bounds",
        "bytecheck",
    ];
    let mut out = Vec::new();
    for attr in attrs.iter().filter(|a| a.path().is_ident("rkyv")) {
        let Meta::List(list) = &attr.meta else {
            continue;
        };
        let Ok(items) = list
            .parse_args_with(syn::punctuated::Punctuated::<Meta, syn::Token![,]>::parse_terminated)
        else {
            // Not understood: keep all of it.
            out.push(normalized(list.tokens.clone()));
            continue;
        };
        for item in items {
            let neutral = item
                .path()
                .get_ident()
                .is_some_and(|i| NEUTRAL.contains(&i.to_string().as_str()));
            if !neutral {
                out.push(normalized(item.to_token_stream()));
            }
        }
    }
    out.join(";")
}

/// Tokens as text without the spacing the source happened to use.
fn normalized(tokens: Tokens) -> String {
    tokens
        .to_string()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect()
}
