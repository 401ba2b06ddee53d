"""The functions a read-only query may call: a vetted allow-list, by ClickHouse category.

Each name here computes from its arguments only (values, the rows it is given, the clock or
a random source). Left out on purpose, with the categories they come from:

- anything that reads files, the network, dictionaries, settings, the server or the query
  log (`file`, `url`, `s3`, `dictGet*`, `joinGet`, `getSetting`, `hostName`, `currentUser`,
  `version`, `uptime`, the `AI`, `Dictionary`, `Embedded Dictionary`, `Introspection`,
  `Internal` and most `Other` functions);
- functions that take another function's name as a string, which the checker cannot see
  (`arrayReduce`, `arrayReduceInRanges`, `initializeAggregation`);
- functions whose point is an error or a side channel (`throwIf`, `aggThrow`, `sleep`,
  `sleepEachRow`, `logTrace`), `GLOBAL IN` (distributed only) and the `*IgnoreSet` internals;
- functions whose work on one row grows with the square of its arguments' length (edit
  distances: `editDistance`/`levenshteinDistance`, `editDistanceUTF8`,
  `damerauLevenshteinDistance`, `arrayLevenshteinDistance[Weighted]`, `arraySimilarity`):
  the time limit is checked between blocks, not inside such a call, so 12 rows of
  `editDistance` on 20,000 characters ran 12.6 s of CPU under a 1 s limit;
- output formats (`formatRow*`, `groupFormat`: some formats read schema files);
- whole families nobody needs over a deployment ledger (geo, bitmaps, ML, time series,
  encryption, KQL, `chdb`).

A function missing here is refused with its name: adding one is a line here and a review of
what it reads. Aliases and case-insensitive spellings of these names are accepted as the
engine resolves them (see `shipledger.sinks.ledger.query_guard.FunctionCatalog`), and aggregate
functions with the combinators in `COMBINATORS` (`countIf`, `uniqExactIf`, `groupArrayDistinct`).
"""

from __future__ import annotations

#: Allowed function names by ClickHouse category (`system.functions.categories`), plus the
#: parser's own functions (`Syntax`: lambdas, EXISTS, GROUPING, CASE x WHEN).
ALLOWED_BY_CATEGORY: dict[str, str] = {
    "Aggregate Functions": """
        analysisOfVariance any anyHeavy anyLast anyLast_respect_nulls any_respect_nulls
        approx_top_k approx_top_sum argAndMax argAndMin argMax argMin avg avgWeighted
        boundingRatio categoricalInformationValue contingency corr corrMatrix corrStable
        count covarPop covarPopMatrix covarPopStable covarSamp covarSampMatrix
        covarSampStable cramersV cramersVBiasCorrected cume_dist deltaSum
        deltaSumTimestamp denseRank distinctDynamicTypes distinctJSONPaths
        distinctJSONPathsAndTypes entropy estimateCompressionRatio
        exponentialMovingAverage exponentialTimeDecayedAvg exponentialTimeDecayedCount
        exponentialTimeDecayedMax exponentialTimeDecayedSum gini groupArray
        groupArrayInsertAt groupArrayIntersect groupArrayLast groupArrayMovingAvg
        groupArrayMovingSum groupArraySample groupArraySorted groupBitAnd groupBitOr
        groupBitXor groupConcat groupUniqArray histogram intervalLengthSum
        kolmogorovSmirnovTest kurtPop kurtSamp lag lagInFrame largestTriangleThreeBuckets
        lead leadInFrame mannWhitneyUTest max maxIntersections maxIntersectionsPosition
        maxMappedArrays meanZTest mergedJSONPatch min minMappedArrays
        nonNegativeDerivative nth_value ntile percentRank quantile quantileBFloat16
        quantileBFloat16Weighted quantileDD quantileDeterministic quantileExact
        quantileExactExclusive quantileExactHigh quantileExactInclusive quantileExactLow
        quantileExactWeighted quantileExactWeightedInterpolated quantileGK
        quantileInterpolatedWeighted quantilePrometheusHistogram quantileTDigest
        quantileTDigestWeighted quantileTiming quantileTimingWeighted quantiles
        quantilesBFloat16 quantilesBFloat16Weighted quantilesDD quantilesDeterministic
        quantilesExact quantilesExactExclusive quantilesExactHigh quantilesExactInclusive
        quantilesExactLow quantilesExactWeighted quantilesExactWeightedInterpolated
        quantilesGK quantilesInterpolatedWeighted quantilesPrometheusHistogram
        quantilesTDigest quantilesTDigestWeighted quantilesTiming quantilesTimingWeighted
        rank rankCorr regr_avgx regr_avgy regr_count regr_intercept regr_r2 regr_slope
        regr_sxx regr_sxy regr_syy retention row_number sequenceCount sequenceMatch
        sequenceMatchEvents sequenceNextNode simpleLinearRegression singleValueOrNull
        skewPop skewSamp sparkbar stddevPop stddevPopStable stddevSamp stddevSampStable
        studentTTest studentTTestOneSample sum sumCount sumKahan sumMapFiltered
        sumMapFilteredWithOverflow sumMapWithOverflow sumMappedArrays sumWithOverflow
        theilsU topK topKWeighted uniq uniqCombined uniqCombined64 uniqExact uniqHLL12
        uniqUpTo varPop varPopStable varSamp varSampStable welchTTest windowFunnel
        """,
    "Arithmetic": """
        abs avg2 byteSwap divide divideDecimal divideOrNull gcd ifNotFinite intDiv
        intDivOrNull intDivOrZero isFinite isInfinite isNaN lcm max2 midpoint min2 minus
        modulo moduloLegacy moduloOrNull moduloOrZero multiply multiplyDecimal negate plus
        positiveModulo positiveModuloOrNull sqr
        """,
    "Arrays": """
        array arrayAUCPR arrayAll arrayAutocorrelation arrayAvg arrayBottomK arrayCompact
        arrayConcat arrayCount arrayCumSum arrayCumSumNonNegative arrayDifference
        arrayDistinct arrayDotProduct arrayElement arrayElementOrNull arrayEnumerate
        arrayEnumerateDense arrayEnumerateDenseRanked arrayEnumerateUniq
        arrayEnumerateUniqRanked arrayExcept arrayExists arrayFill arrayFilter arrayFirst
        arrayFirstIndex arrayFirstOrNull arrayFlatten arrayFlattenedLength arrayFold
        arrayIntersect arrayJaccardIndex arrayJoin arrayLast arrayLastIndex
        arrayLastOrNull arrayMap
        arrayMax arrayMin arrayNormalizedGini arrayPartialReverseSort arrayPartialShuffle
        arrayPartialSort arrayPopBack arrayPopFront arrayProduct arrayPushBack
        arrayPushFront arrayROCAUC arrayRandomSample arrayRemove arrayResize arrayReverse
        arrayReverseFill arrayReverseSort arrayReverseSplit arrayRotateLeft
        arrayRotateRight arrayShiftLeft arrayShiftRight arrayShingles arrayShuffle
        arraySlice arraySort arraySplit arraySum arraySymmetricDifference
        arrayTopK arrayTranspose arrayUnion arrayUniq arrayWithConstant arrayZip
        arrayZipUnaligned countEqual empty emptyArrayDate emptyArrayDateTime
        emptyArrayFloat32 emptyArrayFloat64 emptyArrayInt16 emptyArrayInt32
        emptyArrayInt64 emptyArrayInt8 emptyArrayString emptyArrayToSingle
        emptyArrayUInt16 emptyArrayUInt32 emptyArrayUInt64 emptyArrayUInt8 has hasAll
        hasAny hasSubstr indexOf indexOfAssumeSorted length notEmpty notHas range
        replicate reverse
        """,
    "Bit": """
        bitAnd bitCount bitHammingDistance bitNot bitOr bitRotateLeft bitRotateRight
        bitShiftLeft bitShiftRight bitSlice bitTest bitTestAll bitTestAny bitXor
        """,
    "Comparison": """
        equals greater greaterOrEquals in isDistinctFrom isNotDistinctFrom less
        lessOrEquals notEquals notIn notNullIn nullIn
        """,
    "Conditional": """
        clamp greatest if least multiIf
        """,
    "Dates and Times": """
        UTCTimestamp YYYYMMDDToDate YYYYMMDDToDate32 YYYYMMDDhhmmssToDateTime
        YYYYMMDDhhmmssToDateTime64 addDate addDays addHours addInterval addMicroseconds
        addMilliseconds addMinutes addMonths addNanoseconds addQuarters addSeconds
        addTupleOfIntervals addWeeks addYears age changeDay changeHour changeMinute
        changeMonth changeSecond changeYear dateDiff dateName dateTrunc formatDateTime
        formatDateTimeInJodaSyntax fromDaysSinceYearZero fromDaysSinceYearZero32
        fromModifiedJulianDay fromModifiedJulianDayOrNull fromUTCTimestamp
        fromUnixTimestamp fromUnixTimestampInJodaSyntax localtime makeDate makeDate32
        makeDateTime makeDateTime64 monthName now now64 nowInBlock nowInBlock64
        serverTimezone subDate subtractDays subtractHours subtractInterval
        subtractMicroseconds subtractMilliseconds subtractMinutes subtractMonths
        subtractNanoseconds subtractQuarters subtractSeconds subtractTupleOfIntervals
        subtractWeeks subtractYears timeDiff timeSlot timeSlots timestamp timezone
        timezoneOf timezoneOffset toDayOfMonth toDayOfWeek toDayOfYear toDaysInMonth
        toDaysSinceYearZero toHour toISOWeek toISOYear toLastDayOfMonth toLastDayOfWeek
        toMicrosecond toMillisecond toMinute toModifiedJulianDay toModifiedJulianDayOrNull
        toMonday toMonth toMonthNumSinceEpoch toNanosecond toQuarter toRelativeDayNum
        toRelativeHourNum toRelativeMinuteNum toRelativeMonthNum toRelativeQuarterNum
        toRelativeSecondNum toRelativeWeekNum toRelativeYearNum toSecond toStartOfDay
        toStartOfFifteenMinutes toStartOfFiveMinutes toStartOfHour toStartOfISOYear
        toStartOfInterval toStartOfMicrosecond toStartOfMillisecond toStartOfMinute
        toStartOfMonth toStartOfNanosecond toStartOfQuarter toStartOfSecond
        toStartOfTenMinutes toStartOfWeek toStartOfYear toTimeWithFixedDate toTimezone
        toUTCTimestamp toUnixTimestamp toWeek toYYYYMM toYYYYMMDD toYYYYMMDDhhmmss toYear
        toYearNumSinceEpoch toYearWeek today yesterday
        """,
    "Encoding": """
        bin bitPositionsToArray bitmaskToArray bitmaskToList char hex hilbertDecode
        hilbertEncode mortonDecode mortonEncode sqidDecode sqidEncode unbin unhex
        """,
    "Financial": """
        financialInternalRateOfReturn financialInternalRateOfReturnExtended
        financialNetPresentValue financialNetPresentValueExtended
        """,
    "Hash": """
        MD4 MD5 RIPEMD160 SHA1 SHA224 SHA256 SHA384 SHA512 SHA512_256 URLHash cityHash64
        farmFingerprint64 farmHash64 gccMurmurHash halfMD5 hiveHash icebergHash intHash32
        intHash64 javaHash javaHashUTF16LE jumpConsistentHash kafkaMurmurHash keccak256
        kostikConsistentHash metroHash64 murmurHash2_32 murmurHash2_64 murmurHash3_128
        murmurHash3_32 murmurHash3_64 ngramMinHash ngramMinHashArg
        ngramMinHashArgCaseInsensitive ngramMinHashArgCaseInsensitiveUTF8
        ngramMinHashArgUTF8 ngramMinHashCaseInsensitive ngramMinHashCaseInsensitiveUTF8
        ngramMinHashUTF8 ngramSimHash ngramSimHashCaseInsensitive
        ngramSimHashCaseInsensitiveUTF8 ngramSimHashUTF8 sipHash128 sipHash128Keyed
        sipHash128Reference sipHash128ReferenceKeyed sipHash64 sipHash64Keyed
        wordShingleMinHash wordShingleMinHashArg wordShingleMinHashArgCaseInsensitive
        wordShingleMinHashArgCaseInsensitiveUTF8 wordShingleMinHashArgUTF8
        wordShingleMinHashCaseInsensitive wordShingleMinHashCaseInsensitiveUTF8
        wordShingleMinHashUTF8 wordShingleSimHash wordShingleSimHashCaseInsensitive
        wordShingleSimHashCaseInsensitiveUTF8 wordShingleSimHashUTF8 wyHash64 xxHash32
        xxHash64 xxHash64Spark xxh3 xxh3_128
        """,
    "IP Address": """
        IPv4CIDRToRange IPv4NumToString IPv4NumToStringClassC IPv4StringToNum
        IPv4StringToNumOrDefault IPv4StringToNumOrNull IPv4ToIPv6 IPv6CIDRToRange
        IPv6NumToString IPv6StringToNum IPv6StringToNumOrDefault IPv6StringToNumOrNull
        cutIPv6 isIPAddressInRange isIPv4String isIPv6String toIPv4 toIPv4OrDefault
        toIPv4OrNull toIPv4OrZero toIPv6 toIPv6OrDefault toIPv6OrNull toIPv6OrZero
        """,
    "JSON": """
        JSONAllPaths JSONAllPathsWithTypes JSONAllValues JSONArrayLength JSONDynamicPaths
        JSONDynamicPathsWithTypes JSONExtract JSONExtractArrayRaw
        JSONExtractArrayRawCaseInsensitive JSONExtractBool JSONExtractBoolCaseInsensitive
        JSONExtractCaseInsensitive JSONExtractFloat JSONExtractFloatCaseInsensitive
        JSONExtractInt JSONExtractIntCaseInsensitive JSONExtractKeys
        JSONExtractKeysAndValues JSONExtractKeysAndValuesCaseInsensitive
        JSONExtractKeysAndValuesRaw JSONExtractKeysAndValuesRawCaseInsensitive
        JSONExtractKeysCaseInsensitive JSONExtractRaw JSONExtractRawCaseInsensitive
        JSONExtractString JSONExtractStringCaseInsensitive JSONExtractUInt
        JSONExtractUIntCaseInsensitive JSONHas JSONKey JSONLength JSONMergePatch
        JSONSharedDataPaths JSONSharedDataPathsWithTypes JSONType JSON_EXISTS JSON_QUERY
        JSON_VALUE dynamicElement dynamicType isDynamicElementInSharedData isValidJSON
        prettyPrintJSON simpleJSONExtractBool simpleJSONExtractFloat simpleJSONExtractInt
        simpleJSONExtractRaw simpleJSONExtractString simpleJSONExtractUInt simpleJSONHas
        toJSONString
        """,
    "Logical": """
        and not or xor
        """,
    "Map": """
        extractKeyValuePairs extractKeyValuePairsWithEscaping map mapAdd mapAll mapApply
        mapConcat mapContainsKey mapContainsKeyLike mapContainsValue mapContainsValueLike
        mapExists mapExtractKeyLike mapExtractValueLike mapFilter mapFromArrays mapKeys
        mapPartialReverseSort mapPartialSort mapPopulateSeries mapReverseSort mapSort
        mapSubtract mapUpdate mapValues
        """,
    "Mathematical": """
        acos acosh asin asinh atan atan2 atanh cbrt cos cosh degrees e erf erfc exp exp10
        exp2 factorial hypot intExp10 intExp2 isPrime isProbablePrime lgamma log log10
        log1p log2 pi pow proportionsZTest radians sigmoid sign sin sinh sqrt tan tanh
        tgamma widthBucket
        """,
    "Null": """
        assumeNotNull coalesce firstNonDefault ifNull isNotNull isNull isNullable
        isZeroOrNull nullIf toNullable
        """,
    "Other": """
        MACNumToString MACStringToNum MACStringToOUI bar byteSize countDigits
        currentDatabase errorCodeToName formatReadableDecimalSize formatReadableQuantity
        formatReadableSize formatReadableTimeDelta identity isConstant isDecimalOverflow
        materialize parseISO8601Duration parseReadableSize parseReadableSizeOrNull
        parseReadableSizeOrZero parseTimeDelta runningDifference
        runningDifferenceStartingWithFirstValue toTypeName transform variantElement
        variantType visibleWidth
        """,
    "Random Number": """
        rand rand64 randCanonical randUniform randomPrintableASCII randomString
        randomStringUTF8
        """,
    "Rounding": """
        ceil floor round roundAge roundBankers roundDown roundDuration roundToExp2 trunc
        """,
    "String": """
        CRC32 CRC32IEEE CRC64 appendTrailingCharIfAbsent ascii base32Decode base32Encode
        base58Decode base58Encode base64Decode base64Encode base64URLDecode
        base64URLEncode basename byteHammingDistance caseFoldUTF8 compareSubstrings concat
        concatAssumeInjective concatWithSeparator concatWithSeparatorAssumeInjective conv
        convertCharset decodeHTMLComponent decodeXMLComponent
        encodeXMLComponent endsWith endsWithCaseInsensitive
        endsWithCaseInsensitiveUTF8 endsWithUTF8 extractTextFromHTML firstLine initcap
        initcapUTF8 isValidASCII isValidUTF8 jaroSimilarity jaroWinklerSimilarity left
        leftPad leftPadUTF8 leftUTF8 lengthUTF8 lower lowerUTF8 naturalSortKey
        normalizeUTF8NFC normalizeUTF8NFD normalizeUTF8NFKC normalizeUTF8NFKCCasefold
        normalizeUTF8NFKD regexpExtract regexpPosition removeDiacriticsUTF8 repeat
        reverseUTF8 right rightPad rightPadUTF8 rightUTF8 soundex space sparseGrams
        sparseGramsHashes sparseGramsHashesUTF8 sparseGramsUTF8 startsWith
        startsWithCaseInsensitive startsWithCaseInsensitiveUTF8 startsWithUTF8
        stringBytesEntropy stringBytesUniq stringJaccardIndex stringJaccardIndexUTF8
        substring substringIndex substringIndexUTF8 substringUTF8 toValidUTF8 trimBoth
        trimLeft trimRight tryBase32Decode tryBase58Decode tryBase64Decode
        tryBase64URLDecode upper upperUTF8
        """,
    "String Replacement": """
        format overlay overlayUTF8 printf regexpQuoteMeta replaceAll replaceOne
        replaceRegexpAll replaceRegexpOne translate translateUTF8
        """,
    "String Search": """
        countMatches countMatchesCaseInsensitive countSubstrings
        countSubstringsCaseInsensitive countSubstringsCaseInsensitiveUTF8 extract
        extractAll extractAllGroupsHorizontal extractGroups hasAllTokens hasAnyTokens
        hasPhrase hasSubsequence hasSubsequenceCaseInsensitive
        hasSubsequenceCaseInsensitiveUTF8 hasSubsequenceUTF8 hasToken
        hasTokenCaseInsensitive hasTokenCaseInsensitiveOrNull hasTokenOrNull highlight
        ilike like locate match matchCaseInsensitive multiFuzzyMatchAllIndices
        multiFuzzyMatchAny multiFuzzyMatchAnyIndex multiMatchAllIndices multiMatchAny
        multiMatchAnyIndex multiSearchAllPositions multiSearchAllPositionsCaseInsensitive
        multiSearchAllPositionsCaseInsensitiveUTF8 multiSearchAllPositionsUTF8
        multiSearchAny multiSearchAnyCaseInsensitive multiSearchAnyCaseInsensitiveUTF8
        multiSearchAnyUTF8 multiSearchFirstIndex multiSearchFirstIndexCaseInsensitive
        multiSearchFirstIndexCaseInsensitiveUTF8 multiSearchFirstIndexUTF8
        multiSearchFirstPosition multiSearchFirstPositionCaseInsensitive
        multiSearchFirstPositionCaseInsensitiveUTF8 multiSearchFirstPositionUTF8
        ngramDistance ngramDistanceCaseInsensitive ngramDistanceCaseInsensitiveUTF8
        ngramDistanceUTF8 ngramSearch ngramSearchCaseInsensitive
        ngramSearchCaseInsensitiveUTF8 ngramSearchUTF8 notILike notLike notMatch
        notMatchCaseInsensitive position positionCaseInsensitive
        positionCaseInsensitiveUTF8 positionUTF8
        """,
    "String Splitting": """
        alphaTokens arrayStringConcat extractAllGroupsVertical naiveBayesNgrams ngrams
        reverseBySeparator splitByChar splitByNonAlpha splitByRegexp splitByString
        splitByWhitespace tokens tokensForLikePattern
        """,
    "Tuple": """
        dotProduct flattenTuple tuple tupleConcat tupleDivide tupleDivideByNumber
        tupleElement tupleHammingDistance tupleIntDiv tupleIntDivByNumber
        tupleIntDivOrZero tupleIntDivOrZeroByNumber tupleMinus tupleModulo
        tupleModuloByNumber tupleMultiply tupleMultiplyByNumber tupleNames tupleNegate
        tuplePlus tuplePositiveModuloByNumber tupleToNameValuePairs
        """,
    "Type Conversion": """
        CAST DATE accurateCast accurateCastOrDefault accurateCastOrNull
        fromUnixTimestamp64Micro fromUnixTimestamp64Milli fromUnixTimestamp64Nano
        fromUnixTimestamp64Second parseDateTime parseDateTime32BestEffort
        parseDateTime32BestEffortOrNull parseDateTime32BestEffortOrZero parseDateTime64
        parseDateTime64BestEffort parseDateTime64BestEffortOrNull
        parseDateTime64BestEffortOrZero parseDateTime64BestEffortUS
        parseDateTime64BestEffortUSOrNull parseDateTime64BestEffortUSOrZero
        parseDateTime64InJodaSyntax parseDateTime64InJodaSyntaxOrNull
        parseDateTime64InJodaSyntaxOrZero parseDateTime64OrNull parseDateTime64OrZero
        parseDateTimeBestEffort parseDateTimeBestEffortOrNull
        parseDateTimeBestEffortOrZero parseDateTimeBestEffortUS
        parseDateTimeBestEffortUSOrNull parseDateTimeBestEffortUSOrZero
        parseDateTimeInJodaSyntax parseDateTimeInJodaSyntaxOrNull
        parseDateTimeInJodaSyntaxOrZero parseDateTimeOrNull parseDateTimeOrZero
        reinterpret reinterpretAsDate reinterpretAsDateTime reinterpretAsFixedString
        reinterpretAsFloat32 reinterpretAsFloat64 reinterpretAsInt128 reinterpretAsInt16
        reinterpretAsInt256 reinterpretAsInt32 reinterpretAsInt64 reinterpretAsInt8
        reinterpretAsString reinterpretAsUInt128 reinterpretAsUInt16 reinterpretAsUInt256
        reinterpretAsUInt32 reinterpretAsUInt64 reinterpretAsUInt8 reinterpretAsUUID
        toBFloat16 toBFloat16OrNull toBFloat16OrZero toBool toDate toDate32
        toDate32OrDefault toDate32OrNull toDate32OrZero toDateOrDefault toDateOrNull
        toDateOrZero toDateTime toDateTime32 toDateTime64 toDateTime64OrDefault
        toDateTime64OrNull toDateTime64OrZero toDateTimeOrDefault toDateTimeOrNull
        toDateTimeOrZero toDecimal128 toDecimal128OrDefault toDecimal128OrNull
        toDecimal128OrZero toDecimal256 toDecimal256OrDefault toDecimal256OrNull
        toDecimal256OrZero toDecimal32 toDecimal32OrDefault toDecimal32OrNull
        toDecimal32OrZero toDecimal64 toDecimal64OrDefault toDecimal64OrNull
        toDecimal64OrZero toDecimalString toFixedString toFloat32 toFloat32OrDefault
        toFloat32OrNull toFloat32OrZero toFloat64 toFloat64OrDefault toFloat64OrNull
        toFloat64OrZero toInt128 toInt128OrDefault toInt128OrNull toInt128OrZero toInt16
        toInt16OrDefault toInt16OrNull toInt16OrZero toInt256 toInt256OrDefault
        toInt256OrNull toInt256OrZero toInt32 toInt32OrDefault toInt32OrNull toInt32OrZero
        toInt64 toInt64OrDefault toInt64OrNull toInt64OrZero toInt8 toInt8OrDefault
        toInt8OrNull toInt8OrZero toInterval toIntervalDay toIntervalHour
        toIntervalMicrosecond toIntervalMillisecond toIntervalMinute toIntervalMonth
        toIntervalNanosecond toIntervalQuarter toIntervalSecond toIntervalWeek
        toIntervalYear toLowCardinality toString toStringCutToZero toTime toTime64
        toTime64OrNull toTime64OrZero toTimeOrNull toTimeOrZero toUInt128
        toUInt128OrDefault toUInt128OrNull toUInt128OrZero toUInt16 toUInt16OrDefault
        toUInt16OrNull toUInt16OrZero toUInt256 toUInt256OrDefault toUInt256OrNull
        toUInt256OrZero toUInt32 toUInt32OrDefault toUInt32OrNull toUInt32OrZero toUInt64
        toUInt64OrDefault toUInt64OrNull toUInt64OrZero toUInt8 toUInt8OrDefault
        toUInt8OrNull toUInt8OrZero toUUID toUUIDOrZero toUnixTimestamp64Micro
        toUnixTimestamp64Milli toUnixTimestamp64Nano toUnixTimestamp64Second
        """,
    "URL": """
        URLHierarchy URLPathHierarchy cutFragment cutQueryString cutQueryStringAndFragment
        cutToFirstSignificantSubdomain cutToFirstSignificantSubdomainCustom
        cutToFirstSignificantSubdomainCustomRFC
        cutToFirstSignificantSubdomainCustomWithWWW
        cutToFirstSignificantSubdomainCustomWithWWWRFC cutToFirstSignificantSubdomainRFC
        cutToFirstSignificantSubdomainWithWWW cutToFirstSignificantSubdomainWithWWWRFC
        cutURLParameter cutWWW decodeURLComponent decodeURLFormComponent domain domainRFC
        domainWithoutWWW domainWithoutWWWRFC encodeURLComponent encodeURLFormComponent
        extractURLParameter extractURLParameterNames extractURLParameters
        firstSignificantSubdomain firstSignificantSubdomainCustom
        firstSignificantSubdomainCustomRFC firstSignificantSubdomainRFC fragment netloc
        path pathFull port portRFC protocol queryString queryStringAndFragment
        topLevelDomain topLevelDomainRFC
        """,
    "UUID": """
        UUIDNumToString UUIDStringToNum UUIDToNum UUIDv7ToDateTime dateTime64ToSnowflakeID
        dateTimeToSnowflakeID dateTimeToUUIDv7 generateUUIDv4 generateUUIDv7
        snowflakeIDToDateTime snowflakeIDToDateTime64 toUUIDOrDefault toUUIDOrNull
        """,
    "Syntax": """
        caseWithExpression exists grouping lambda
        """,
}

#: Aggregate function combinators (`sumIf`, `uniqArray`, `avgOrNull`, ...): each changes how
#: an allowed aggregate reads its arguments, never what it can reach.
COMBINATORS = (
    "If",
    "Array",
    "Distinct",
    "OrNull",
    "OrDefault",
    "ForEach",
    "Map",
    "Merge",
    "State",
    "SimpleState",
    "Resample",
    "ArgMin",
    "ArgMax",
)

#: Every allowed name.
ALLOWED_FUNCTIONS = frozenset(
    name for names in ALLOWED_BY_CATEGORY.values() for name in names.split()
)
