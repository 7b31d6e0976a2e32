// The Kotlin tests compile against Debian's kotlinx-coroutines (libkotlinx-coroutines-java,
// 1.0.1: Maven Central is out of reach here), which predates this opt-in marker. uniffi's
// generated code names it in an @OptIn; it carries no behaviour. An app builds against a
// current kotlinx-coroutines from Maven and leaves this file out.
package kotlinx.coroutines

@RequiresOptIn
@Retention(AnnotationRetention.BINARY)
annotation class DelicateCoroutinesApi
